import { describe, expect, it } from "vitest";
import { initialConvergence, nextRung, observePass, type Convergence } from "./convergence.js";

const feed = (samples: Array<[number, number]>, stallPasses = 3) => {
  let s: Convergence = initialConvergence();
  const stalls: number[] = [];
  for (const [pass, remainingBytes] of samples) {
    const r = observePass(s, { pass, remainingBytes }, { stallPasses });
    s = r.state;
    if (r.stalled) stalls.push(pass);
  }
  return { s, stalls };
};

describe("precopy convergence", () => {
  it("a shrinking remainder never stalls", () => {
    expect(
      feed([
        [1, 1000],
        [2, 800],
        [3, 500],
        [4, 300],
        [5, 100],
        [6, 50],
      ]).stalls,
    ).toEqual([]);
  });

  it("stalls after stallPasses passes without a 10% improvement on the best", () => {
    // 950 is within 10% of 1000: not progress; 880 is.
    expect(
      feed([
        [1, 1000],
        [2, 950],
        [3, 990],
        [4, 880],
        [5, 900],
        [6, 870],
        [7, 890],
      ]).stalls,
    ).toEqual([7]);
  });

  it("counts each pass once, however often it is sampled", () => {
    const { s, stalls } = feed([
      [1, 1000],
      [1, 1000],
      [2, 1000],
      [2, 1000],
      [3, 1000],
    ]);
    expect(stalls).toEqual([]);
    expect(s).toEqual({ best: 1000, flatPasses: 2, pass: 3 });
  });

  it("climbs auto-converge, then postcopy if allowed, then nothing", () => {
    const both = { autoConverge: true, postcopy: true };
    expect(nextRung([], both)).toBe("auto-converge");
    expect(nextRung(["auto-converge"], both)).toBe("postcopy");
    expect(nextRung(["auto-converge", "postcopy"], both)).toBeUndefined();
    expect(nextRung([], { autoConverge: false, postcopy: true })).toBe("postcopy");
    expect(nextRung(["auto-converge"], { autoConverge: true, postcopy: false })).toBeUndefined();
  });
});
