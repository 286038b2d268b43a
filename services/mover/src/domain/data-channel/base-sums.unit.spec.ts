import { describe, expect, it } from "vitest";
import { baseRefs, sendKnowing } from "./base-refs.js";
import { BaseSums } from "./base-sums.js";

const digest = (fill: number) => new Uint8Array(32).fill(fill);
const chunk = (crc32c: number, fill: number) => ({ crc32c, blake3: digest(fill) });

describe("base sums sent ahead", () => {
  it("knows a chunk only once the run of sums from chunk 0 covers it", () => {
    const sums = new BaseSums(4096);
    expect(sums.known(0, chunk(1, 1))).toBe("unknown");
    expect(sums.add(0, [{ crc32c: 1, blake3: digest(1) }, "none"])).toBeUndefined();
    expect(sums.coveredBytes).toBe(8192);
    expect(sums.known(0, chunk(1, 1))).toBe("same");
    expect(sums.known(0, chunk(1, 2))).toBe("differs");
    expect(sums.known(0, chunk(2, 1))).toBe("differs");
    expect(sums.known(4096, chunk(1, 1))).toBe("differs");
    expect(sums.known(8192, chunk(1, 1))).toBe("unknown");
  });

  it("takes only the next run of chunks, in order", () => {
    const sums = new BaseSums(4096);
    expect(sums.add(4096, ["none"])).toMatch(/expected 0/);
    expect(sums.add(0, ["none"])).toBeUndefined();
    expect(sums.add(0, ["none"])).toMatch(/expected 4096/);
    expect(sums.coveredBytes).toBe(4096);
  });

  it("refers to a chunk the base holds, expecting a hit; sends a changed one with its data; else as before", () => {
    const s = baseRefs(true);
    const data = { zero: false, firstSend: true };
    expect(sendKnowing(s, data, "same")).toEqual({ base: true, expected: true, next: s });
    expect(sendKnowing(s, data, "differs")).toEqual({ base: false, expected: false, next: s });
    expect(sendKnowing(s, data, "unknown")).toMatchObject({ base: true, expected: false });
    // Zero chunks and resends never refer, whatever the sums say.
    expect(sendKnowing(s, { zero: true, firstSend: true }, "same").base).toBe(false);
    expect(sendKnowing(s, { zero: false, firstSend: false }, "same").base).toBe(false);
  });
});
