import { describe, expect, it } from "vitest";
import {
  afterBaseAnswer,
  BASE_MISS_STREAK,
  baseRefs,
  MAX_UNREFERRED,
  nextSend,
  type BaseAnswer,
  type BaseRefs,
} from "./base-refs.js";

const fold = (answers: BaseAnswer[]): BaseRefs => answers.reduce(afterBaseAnswer, baseRefs(true));
const data = { zero: false, firstSend: true };
const misses = (n: number): BaseAnswer[] => Array.from({ length: n }, () => "mismatch");

/** Which of the next `n` first-sent data chunks go as references. */
function plan(s: BaseRefs, n: number): boolean[] {
  const out: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const { base, next } = nextSend(s, data);
    out.push(base);
    s = next;
  }
  return out;
}

describe("base references", () => {
  it("refers only in an incremental batch, only for a non-zero chunk's first send", () => {
    expect(nextSend(baseRefs(true), data).base).toBe(true);
    expect(nextSend(baseRefs(false), data).base).toBe(false);
    expect(nextSend(baseRefs(true), { zero: true, firstSend: true }).base).toBe(false);
    expect(nextSend(baseRefs(true), { zero: false, firstSend: false }).base).toBe(false);
  });

  it("stops for the batch at once when the destination has no base", () => {
    expect(plan(fold(["no-base"]), 100).some(Boolean)).toBe(false);
    expect(plan(fold(["hit", "hit", "no-base", "hit"]), 100).some(Boolean)).toBe(false);
  });

  it(`after ${BASE_MISS_STREAK} misses in a row refers only now and then, farther apart while they miss`, () => {
    expect(plan(fold(misses(BASE_MISS_STREAK - 1)), 4)).toEqual([true, true, true, true]);
    expect(plan(fold(misses(BASE_MISS_STREAK)), 3)).toEqual([false, true, true]);
    expect(plan(fold(misses(BASE_MISS_STREAK + 2)), 6)).toEqual([false, false, false, false, true, true]);
    const long = plan(fold(misses(BASE_MISS_STREAK + 20)), MAX_UNREFERRED + 1);
    expect(long.filter(Boolean)).toHaveLength(1);
    expect(long.at(-1)).toBe(true);
  });

  it("a hit ends the pause and starts the count again", () => {
    expect(plan(fold([...misses(BASE_MISS_STREAK + 3), "hit"]), 3)).toEqual([true, true, true]);
    expect(fold([...misses(BASE_MISS_STREAK - 1), "hit", ...misses(BASE_MISS_STREAK - 1)]).unreferred).toBe(0);
  });
});
