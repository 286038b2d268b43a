import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { FederationAppend } from "#schemas/federation.js";
import { logOf, t } from "#test/federation/fixtures.js";
import { decodeAppend, MAX_MESSAGE_BYTES, toMessages } from "./fed-streams.js";

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

  it("gzips an append when asked and it pays, keeps its msgID, and reads both encodings", () => {
    const es = events(100);
    const plain = toMessages(es, 64 * 1024);
    const gz = toMessages(es, 64 * 1024, { gzip: true });
    expect(gz.map((m) => m.id)).toEqual(plain.map((m) => m.id));
    for (const [i, m] of gz.entries()) {
      expect([m.body[0], m.body[1]]).toEqual([0x1f, 0x8b]);
      expect(m.body.length).toBeLessThan(plain[i]!.body.length / 4);
    }
    expect(gz.flatMap((m) => decodeAppend(m.body) ?? [])).toEqual(es);
    // One small event stays JSON: gzip gains nothing on it.
    expect(toMessages(events(1), 0, { gzip: true })[0]?.body[0]).toBe("[".charCodeAt(0));
  });

  it("refuses a gzip append that is corrupt or inflates past a message's size", () => {
    const [m] = toMessages(events(100), 64 * 1024, { gzip: true });
    const corrupt = Uint8Array.from(m!.body);
    corrupt[corrupt.length - 5]! ^= 0xff; // inside the CRC32 of the trailer
    expect(decodeAppend(corrupt)).toBeUndefined();
    const json = Buffer.from(`[${JSON.stringify(events(1)[0])}${" ".repeat(MAX_MESSAGE_BYTES)}]`);
    expect(decodeAppend(json)).toHaveLength(1); // the same bytes as JSON are read
    expect(decodeAppend(gzipSync(json))).toBeUndefined();
  });
});
