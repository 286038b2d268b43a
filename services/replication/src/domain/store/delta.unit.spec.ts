import { describe, expect, it } from "vitest";
import { applyDelta, decodeDelta, encodeDelta } from "./delta.js";

const page = (v: number, len = 4096) => Buffer.alloc(len, v);

describe("chunk deltas", () => {
  it("round-trip and rebuild a chunk from its base: changed, zeroed and grown pages", () => {
    const base = Buffer.concat([page(1), page(2), page(3)]);
    const d = { base: "ab".repeat(32), len: 4 * 4096 - 100, depth: 2, pages: [1, 2, 3], zero: [false, true, false], data: Buffer.concat([page(9), page(7, 4096 - 100)]) };
    const back = decodeDelta(encodeDelta(d));
    expect(back).toEqual({ ...d, data: expect.any(Buffer) as unknown });
    expect(Buffer.from(back.data).equals(d.data)).toBe(true);
    expect(applyDelta(base, back)?.equals(Buffer.concat([page(1), page(9), page(0), page(7, 4096 - 100)]))).toBe(true);
  });
  it("shrinks to the new length and refuses a delta that does not fit", () => {
    expect(applyDelta(Buffer.concat([page(1), page(2)]), { len: 4096, pages: [], zero: [], data: Buffer.alloc(0) })?.equals(page(1))).toBe(true);
    expect(applyDelta(undefined, { len: 4096, pages: [1], zero: [false], data: page(1) })).toBeUndefined();
    expect(applyDelta(undefined, { len: 8192, pages: [0], zero: [false], data: page(1, 100) })).toBeUndefined();
    expect(() => decodeDelta(Buffer.from("nope"))).toThrow(RangeError);
  });
});
