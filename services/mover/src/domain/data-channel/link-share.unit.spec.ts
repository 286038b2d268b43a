import { describe, expect, it } from "vitest";
import { LinkShare } from "./link-share.js";

const MiB = 1024 * 1024;

/**
 * Grants `grants` requests, each flow keeping `depth` requests of `bytes` waiting (a sender with
 * chunks ready), and returns the bytes each flow was granted.
 */
function run(share: LinkShare<null>, flows: Record<string, number>, grants: number, depth = 1): Map<string, number> {
  const got = new Map<string, number>();
  for (const [flow, bytes] of Object.entries(flows))
    for (let i = 0; i < depth; i++) share.add({ flow, bytes, value: null });
  for (let i = 0; i < grants; i++) {
    const g = share.next();
    if (g === undefined) break;
    got.set(g.flow, (got.get(g.flow) ?? 0) + g.bytes);
    share.add({ flow: g.flow, bytes: flows[g.flow] ?? 0, value: null });
  }
  return got;
}

describe("LinkShare", () => {
  it("shares the link between equal priorities by weight, whatever the chunk sizes and queue depths", () => {
    const share = new LinkShare<null>();
    share.set("a", 1);
    share.set("b", 3);
    share.set("c", 2);
    const got = run(share, { a: MiB, b: 4 * MiB, c: MiB / 2 }, 6_000, 3);
    const [a = 0, b = 0, c = 0] = ["a", "b", "c"].map((f) => got.get(f));
    expect(b / a).toBeCloseTo(3, 1);
    expect(c / a).toBeCloseTo(2, 1);
  });

  it("serves a higher priority first, then shares by weight among the rest", () => {
    const share = new LinkShare<null>();
    share.set("low", 5, 0);
    share.set("high", 1, 1);
    const got = run(share, { low: MiB, high: MiB }, 100);
    expect(got.get("low")).toBeUndefined();
    // Once the high-priority flow stops asking, the other one gets every grant.
    share.set("high", 1, -1);
    expect(share.next()).toMatchObject({ flow: "low" });
  });

  it("gives a flow that was idle no credit for the time it waited, and applies a new weight at once", () => {
    const share = new LinkShare<null>();
    share.set("a", 1);
    share.set("b", 1);
    run(share, { a: MiB }, 50); // a alone for a while
    share.next(); // a's waiting request
    const got = run(share, { a: MiB, b: MiB }, 100);
    expect(Math.abs((got.get("a") ?? 0) - (got.get("b") ?? 0))).toBeLessThanOrEqual(2 * MiB);
    share.set("b", 4);
    const after = run(share, { a: MiB, b: MiB }, 500);
    expect((after.get("b") ?? 0) / (after.get("a") ?? 1)).toBeCloseTo(4, 0);
  });
});
