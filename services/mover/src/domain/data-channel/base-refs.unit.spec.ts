import { describe, expect, it } from "vitest";
import { afterBaseAnswer, BASE_MISS_STREAK, baseRefs, refersToBase, type BaseAnswer } from "./base-refs.js";

const fold = (answers: BaseAnswer[]) => answers.reduce(afterBaseAnswer, baseRefs(true));
const data = { zero: false, firstSend: true };

describe("base references", () => {
  it("refers only in an incremental batch, only for a non-zero chunk's first send", () => {
    expect(refersToBase(baseRefs(true), data)).toBe(true);
    expect(refersToBase(baseRefs(false), data)).toBe(false);
    expect(refersToBase(baseRefs(true), { zero: true, firstSend: true })).toBe(false);
    expect(refersToBase(baseRefs(true), { zero: false, firstSend: false })).toBe(false);
  });

  it("stops at once when the destination has no base", () => {
    expect(fold(["no-base"]).referring).toBe(false);
    expect(fold(["hit", "hit", "no-base", "hit"]).referring).toBe(false);
  });

  it(`stops after ${BASE_MISS_STREAK} misses in a row; a hit in between starts the count again`, () => {
    const misses = (n: number): BaseAnswer[] => Array.from({ length: n }, () => "mismatch");
    expect(fold(misses(BASE_MISS_STREAK - 1)).referring).toBe(true);
    expect(fold(misses(BASE_MISS_STREAK)).referring).toBe(false);
    expect(fold([...misses(BASE_MISS_STREAK - 1), "hit", ...misses(BASE_MISS_STREAK - 1)]).referring).toBe(true);
    expect(fold([...misses(BASE_MISS_STREAK), "hit"]).referring).toBe(false);
  });
});
