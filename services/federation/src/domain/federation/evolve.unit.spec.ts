import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { FederationEvent } from "#schemas/federation.js";
import { evolve, fold } from "./evolve.js";
import { capacity, logOf, t } from "#test/federation/fixtures.js";
import { canonicalJson, placements } from "./state.js";

describe("evolve: sites", () => {
  it("given a join and a health report, the site is joined with the reported health and capacity", () => {
    const a = logOf("a");
    const view = fold([a.joined(t(1)), a.health(t(5), "degraded", 2)]);
    expect(view.sites["a"]).toEqual({
      site: "a",
      status: "joined",
      health: "degraded",
      capacity: capacity(2),
      reportIntervalMs: 1_000,
      joinedAt: t(1),
      lastSeenAt: t(5),
      lastSeq: 2,
      eventCount: 2,
      missing: 0,
    });
  });

  it("given a leave, the site is left with its reason, and a later join clears it", () => {
    const a = logOf("a");
    const left = fold([a.joined(t(1)), a.left(t(2), "power work")]);
    expect(left.sites["a"]).toMatchObject({ status: "left", leftAt: t(2), leftReason: "power work" });
    const back = fold([a.joined(t(3))], left);
    expect(back.sites["a"]?.status).toBe("joined");
    expect(back.sites["a"]).not.toHaveProperty("leftAt");
  });

  it("a health report from a site whose join was never seen makes an 'unknown' site", () => {
    const view = fold([{ ...logOf("x").health(t(1)), seq: 7 }]);
    expect(view.sites["x"]).toMatchObject({ status: "unknown", health: "healthy", lastSeq: 7, missing: 6 });
  });

  it("a copy folded twice counts once (own append, then the sourced copy)", () => {
    const a = logOf("a");
    const events = [a.joined(t(1)), a.health(t(2)), a.placed(t(3), "vm1")];
    const once = fold(events);
    expect(fold([...events, ...events])).toEqual(once);
    expect(once.sites["a"]?.eventCount).toBe(3);
  });

  it("a jump in a site's sequence is counted as missing events", () => {
    const a = logOf("a");
    const [j, , h3] = [a.joined(t(1)), a.health(t(2)), a.health(t(3))];
    expect(fold([j, h3]).sites["a"]).toMatchObject({ lastSeq: 3, eventCount: 2, missing: 1 });
  });
});

describe("evolve: placements resolve by last writer wins", () => {
  it("the later placement wins whichever arrives first", () => {
    const a = logOf("a");
    const b = logOf("b");
    const early = a.placed(t(10), "vm1");
    const late = b.placed(t(11), "vm1");
    expect(fold([early, late]).vms["vm1"]?.site).toBe("b");
    expect(fold([late, early]).vms["vm1"]?.site).toBe("b");
  });

  it("at equal times the greater site id wins", () => {
    const a = logOf("a");
    const b = logOf("b");
    const pa = a.placed(t(10), "vm1");
    const pb = b.placed(t(10), "vm1");
    expect(fold([pa, pb]).vms["vm1"]).toMatchObject({ site: "b", by: "b" });
    expect(fold([pb, pa]).vms["vm1"]).toMatchObject({ site: "b", by: "b" });
  });

  it("a move places the VM at its destination; a removal leaves a tombstone older claims cannot beat", () => {
    const a = logOf("a");
    const b = logOf("b");
    const placed = a.placed(t(1), "vm1", "h1");
    const moved = a.moved(t(2), "vm1", "a", "b");
    const removed = b.removed(t(3), "vm1");
    expect(fold([placed, moved]).vms["vm1"]).toMatchObject({ status: "placed", site: "b", by: "a" });
    const view = fold([removed, moved, placed]);
    expect(view.vms["vm1"]).toMatchObject({ status: "removed", site: "b" });
    expect(placements(view)).toEqual([]);
  });
});

/** Random per-site logs, interleaved at random: what sourcing does at every site. */
const arbLogs = fc.array(
  fc.array(
    fc.tuple(fc.integer({ min: 0, max: 20 }), fc.constantFrom("vm1", "vm2", "vm3"), fc.integer({ min: 0, max: 2 })),
    { maxLength: 12 },
  ),
  { minLength: 1, maxLength: 4 },
);

function buildLogs(spec: Array<Array<[number, string, number]>>): FederationEvent[][] {
  return spec.map((entries, i) => {
    const site = `s${i}`;
    const log = logOf(site);
    const out: FederationEvent[] = [log.joined(t(0))];
    for (const [sec, vm, kind] of entries) {
      out.push(kind === 0 ? log.placed(t(sec), vm) : kind === 1 ? log.removed(t(sec), vm) : log.health(t(sec)));
    }
    return out;
  });
}

/** Merges logs in the order `picks` chooses, keeping each log's own order. */
function interleave(logs: FederationEvent[][], picks: number[]): FederationEvent[] {
  const queues = logs.map((l) => l.slice());
  const out: FederationEvent[] = [];
  let i = 0;
  while (queues.some((q) => q.length > 0)) {
    const live = queues.filter((q) => q.length > 0);
    const q = live[(picks[i++ % Math.max(picks.length, 1)] ?? 0) % live.length]!;
    out.push(q.shift()!);
  }
  return out;
}

describe("evolve: convergence", () => {
  it("every interleaving of the same site logs folds to the same view, duplicates included", () => {
    fc.assert(
      fc.property(
        arbLogs,
        fc.array(fc.nat(), { minLength: 1 }),
        fc.array(fc.nat(), { minLength: 1 }),
        (spec, p1, p2) => {
          const logs = buildLogs(spec);
          const one = fold(interleave(logs, p1));
          const other = fold(interleave([...logs, ...logs], p2));
          expect(canonicalJson(other)).toBe(canonicalJson(one));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("evolve: purity and odd ids", () => {
  it("evolve returns a new view and leaves its input untouched", () => {
    const a = logOf("a");
    const before = fold([a.joined(t(1))]);
    const snapshot = canonicalJson(before);
    const after = evolve(before, a.placed(t(2), "vm1"));
    expect(canonicalJson(before)).toBe(snapshot);
    expect(after.vms["vm1"]?.site).toBe("a");
  });

  it("an event already folded returns the very same view", () => {
    const a = logOf("a");
    const joined = a.joined(t(1));
    const view = fold([joined]);
    expect(evolve(view, joined)).toBe(view);
  });

  it("VM and site ids that name Object.prototype members are ordinary ids", () => {
    const c = logOf("constructor");
    const view = fold([c.joined(t(1)), c.placed(t(2), "toString"), c.placed(t(3), "__proto__")]);
    expect(view.sites["constructor"]?.status).toBe("joined");
    expect(placements(view).map((p) => p.vm)).toEqual(["__proto__", "toString"]);
    expect("hasOwnProperty" in view.vms).toBe(false);
  });
});
