import { describe, expect, it } from "vitest";
import { newTokenBucket, reserve, setRate, UNLIMITED_BYTES_PER_SEC } from "./token-bucket.js";

describe("token bucket", () => {
  it("paces to its rate, and waits out a debt", () => {
    const b = newTokenBucket(1000, 0);
    expect(reserve(b, 100, 0)).toBe(0); // the burst (a tenth of a second)
    expect(reserve(b, 1000, 0)).toBe(1000);
  });
  it("takes a new rate from now on: a debt is paid at the new rate, earned tokens are kept up to the new burst", () => {
    const b = newTokenBucket(1000, 0);
    reserve(b, 1100, 0); // 1000 bytes of debt: 1 s at the old rate
    setRate(b, 10_000, 0);
    expect(reserve(b, 0, 0)).toBe(100); // 0.1 s at the new one
    setRate(b, 500, 10_000); // idle 10 s: the tokens cap at the new, smaller burst
    expect(b.tokens).toBe(50);
    setRate(b, UNLIMITED_BYTES_PER_SEC, 10_000);
    expect(reserve(b, 1 << 30, 10_001)).toBe(0);
    expect(() => setRate(b, 0, 0)).toThrow(RangeError);
  });
});
