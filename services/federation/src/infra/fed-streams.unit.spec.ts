import { describe, expect, it } from "vitest";
import { FederationAppend } from "#schemas/federation.js";
import { logOf, t } from "#test/federation/fixtures.js";
import { decodeAppend, toMessages } from "./fed-streams.js";

const events = (n: number) => {
  const a = logOf("a");
  return [a.joined(t(0)), ...Array.from({ length: n - 1 }, (_, i) => a.placed(t(1), `vm${i}`, "host-1"))];
};

describe("appends", () => {
  it("packs consecutive events into messages no larger than the limit", () => {
    const es = events(100);
    const msgs = toMessages(es, 2_048);
    expect(msgs.length).toBeGreaterThan(1);
    for (const m of msgs) expect(m.body.length).toBeLessThanOrEqual(2_048);
    expect(msgs.flatMap((m) => decodeAppend(m.body) ?? [])).toEqual(es);
  });

  it("with a limit of 0 sends one event per message; an event above the limit goes alone", () => {
    expect(toMessages(events(5), 0).map((m) => decodeAppend(m.body)?.length)).toEqual([1, 1, 1, 1, 1]);
  });

  it("names each message by site, first seq and a digest of its bytes", () => {
    const [one, two] = toMessages(events(4), 0);
    expect(one?.id).toMatch(/^a\.1\.[A-Za-z0-9_-]{16}$/);
    expect(two?.id.startsWith("a.2.")).toBe(true);
    const again = toMessages(events(4), 0)[0];
    expect(again?.id).toBe(one?.id);
  });

  it("rejects a message that is not consecutive events of one site", () => {
    const a = logOf("a");
    const b = logOf("b");
    expect(FederationAppend.safeParse([a.joined(t(0)), b.joined(t(0))]).success).toBe(false);
    const [j, , h] = [a.joined(t(0)), a.health(t(1)), a.health(t(2))];
    expect(FederationAppend.safeParse([j, h]).success).toBe(false);
    expect(decodeAppend(new TextEncoder().encode("not json"))).toBeUndefined();
  });
});
