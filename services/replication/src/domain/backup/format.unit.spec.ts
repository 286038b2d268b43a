import { describe, expect, it } from "vitest";
import { nanosToMs } from "./format.js";

describe("backup timestamps", () => {
  it("truncate nanoseconds to whole milliseconds like BigInt division", () => {
    for (const ns of ["0", "999999", "1000000", "1764115200000000001", "1764115200123999999"]) {
      expect(nanosToMs(ns), ns).toBe(Number(BigInt(ns) / 1_000_000n));
    }
  });
});
