import { describe, expect, it } from "vitest";
import { compareTokens, FenceTable, fenceKey, tokenOf } from "./fence.js";

const key = fenceKey({ migrationId: "m", destDir: "d", destName: "disk.img", batch: 3 });

describe("fence table", () => {
  it("orders tokens by attempt, then by delivery; a missing delivery counts as 0", () => {
    expect(compareTokens(tokenOf({ attempt: 1 }), tokenOf({ attempt: 0, delivery: 9 }))).toBeGreaterThan(0);
    expect(compareTokens(tokenOf({ attempt: 0, delivery: 2 }), tokenOf({ attempt: 0, delivery: 1 }))).toBeGreaterThan(
      0,
    );
    expect(compareTokens(tokenOf({ attempt: 0 }), tokenOf({ attempt: 0, delivery: 1 }))).toBeLessThan(0);
    expect(compareTokens(tokenOf({ attempt: 2, delivery: 1 }), tokenOf({ attempt: 2, delivery: 1 }))).toBe(0);
  });

  it("a redelivery supersedes the live holder, which no longer holds the key", () => {
    const t = new FenceTable<string>();
    expect(t.claim(key, { attempt: 0, delivery: 1 }, "first")).toEqual({ granted: true });
    expect(t.claim(key, { attempt: 0, delivery: 2 }, "second")).toEqual({ granted: true, superseded: ["first"] });
    expect(t.holds(key, "first")).toBe(false);
    expect(t.holds(key, "second")).toBe(true);
  });

  it("refuses an older token, even after the newer holder released the key", () => {
    const t = new FenceTable<string>();
    t.claim(key, { attempt: 1, delivery: 1 }, "retry");
    t.release(key, "retry");
    expect(t.claim(key, { attempt: 0, delivery: 5 }, "stale")).toEqual({
      granted: false,
      newer: { attempt: 1, delivery: 1 },
    });
    expect(t.claim(key, { attempt: 1, delivery: 1 }, "again")).toEqual({ granted: true });
  });

  it("between equal tokens the newest session wins (senders without a delivery count)", () => {
    const t = new FenceTable<string>();
    t.claim(key, tokenOf({ attempt: 0 }), "old");
    expect(t.claim(key, tokenOf({ attempt: 0 }), "new")).toEqual({ granted: true, superseded: ["old"] });
  });

  it("keys are independent and the table forgets the least recently claimed first", () => {
    const t = new FenceTable<string>(2);
    const k = (batch: number): string => fenceKey({ migrationId: "m", destDir: "d", destName: "disk.img", batch });
    t.claim(k(1), { attempt: 3, delivery: 1 }, "a");
    t.claim(k(2), { attempt: 0, delivery: 1 }, "b");
    t.claim(k(3), { attempt: 0, delivery: 1 }, "c");
    expect(t.size).toBe(2);
    expect(t.claim(k(1), { attempt: 0, delivery: 1 }, "d")).toEqual({ granted: true }); // forgotten
    expect(t.holds(k(3), "c")).toBe(true);
  });

  it("stripes of one sender hold a batch together; a redelivery fences every stripe", () => {
    const t = new FenceTable<string>();
    const token = { attempt: 0, delivery: 1 };
    expect(t.claim(key, token, "s0", "group")).toEqual({ granted: true });
    expect(t.claim(key, token, "s1", "group")).toEqual({ granted: true });
    expect(t.holds(key, "s0") && t.holds(key, "s1")).toBe(true);
    t.release(key, "s0");
    expect(t.holds(key, "s1")).toBe(true);
    // Another stripe group with an equal token is a new holder (newest wins), as without stripes.
    expect(t.claim(key, token, "x0", "other")).toEqual({ granted: true, superseded: ["s1"] });
    expect(t.claim(key, { attempt: 0, delivery: 2 }, "r0")).toEqual({ granted: true, superseded: ["x0"] });
    expect(t.holds(key, "x0")).toBe(false);
    // A stale stripe of the old group may not join the newer holder.
    expect(t.claim(key, token, "s2", "group")).toEqual({ granted: false, newer: { attempt: 0, delivery: 2 } });
  });

  it("a stripe resumed on a new connection supersedes its own old session, not the other stripes", () => {
    const t = new FenceTable<string>();
    const token = { attempt: 0, delivery: 1 };
    const [first, second] = [
      { firstChunk: 0, chunkCount: 12 },
      { firstChunk: 12, chunkCount: 12 },
    ];
    expect(t.claim(key, token, "s0", "group", first)).toEqual({ granted: true });
    expect(t.claim(key, token, "s1", "group", second)).toEqual({ granted: true });
    expect(t.claim(key, token, "s0-again", "group", first)).toEqual({
      granted: true,
      superseded: ["s0"],
      resumed: true,
    });
    expect(t.holds(key, "s0")).toBe(false);
    expect(t.holds(key, "s1") && t.holds(key, "s0-again")).toBe(true);
  });

  it("a stripe's first connection that claims after the stripe resumed is refused; resumes go on superseding", () => {
    const t = new FenceTable<string>();
    const token = { attempt: 0, delivery: 1 };
    const run = { firstChunk: 0, chunkCount: 12 };
    expect(t.claim(key, token, "resumed", "group", { ...run, resume: true })).toEqual({ granted: true });
    expect(t.claim(key, token, "late", "group", run)).toEqual({ granted: false, newer: token, resumed: true });
    expect(t.claim(key, token, "other", "group", { firstChunk: 12, chunkCount: 12 })).toEqual({ granted: true });
    t.release(key, "resumed");
    expect(t.claim(key, token, "late", "group", run)).toEqual({ granted: false, newer: token, resumed: true });
    expect(t.claim(key, token, "again", "group", { ...run, resume: true })).toEqual({ granted: true });
    expect(t.claim(key, token, "third", "group", { ...run, resume: true })).toEqual({
      granted: true,
      superseded: ["again"],
      resumed: true,
    });
  });
});
