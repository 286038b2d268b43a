import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  applyPages,
  cvsAt,
  decodeIndex,
  decodeRecord,
  decodeTail,
  deltaRebuilds,
  encodeIndex,
  encodeRecord,
  encodeTail,
  maxWholeRecord,
  mergePages,
  pagesOf,
  pageSetOf,
  stackPages,
  TAIL_BYTES,
} from "./pack.js";

const page = (v: number, len = 4096) => Buffer.alloc(len, v);
const H = (c: string) => c.repeat(64);

describe("pack records", () => {
  it("round-trip whole chunks and page deltas", () => {
    const whole = decodeRecord(encodeRecord(H("a"), "whole", { len: 8192, data: Buffer.concat([page(1), page(2)]) }));
    expect(
      whole.kind === "whole" && whole.hash === H("a") && whole.data.equals(Buffer.concat([page(1), page(2)])),
    ).toBe(true);
    const d = { base: H("b"), pages: [1, 3], zero: [false, true] };
    const rec = decodeRecord(encodeRecord(H("c"), "delta", { len: 4 * 4096 - 100, data: page(9), delta: d }));
    expect(rec.kind).toBe("delta");
    if (rec.kind === "delta")
      expect({ ...rec.delta, data: Buffer.from(rec.delta.data) }).toEqual({ ...d, len: 4 * 4096 - 100, data: page(9) });
    expect(() => decodeRecord(Buffer.from("nope"))).toThrow(RangeError);
  });
  it("keep a whole chunk's page chaining values after its data, and only where its size has them", () => {
    const data = Buffer.concat([page(1), page(2)]);
    const cvs = Buffer.alloc(64, 7);
    const rec = encodeRecord(H("a"), "whole", { len: 8192, data, cvs });
    expect(rec.length).toBe(maxWholeRecord(8192));
    expect(cvsAt(rec.length, 8192)).toBe(48 + 8192);
    const back = decodeRecord(rec);
    expect(back.kind === "whole" && back.data.equals(data) && back.cvs?.equals(cvs)).toBe(true);
    // 3 pages is no page tree: the values are not written, and a record without them has none.
    const odd = encodeRecord(H("b"), "whole", {
      len: 3 * 4096,
      data: Buffer.concat([page(1), page(2), page(3)]),
      cvs: Buffer.alloc(96),
    });
    expect(odd.length).toBe(48 + 3 * 4096);
    expect(cvsAt(odd.length, 3 * 4096)).toBeUndefined();
    expect(cvsAt(48 + 8192, 8192)).toBeUndefined();
    const plain = decodeRecord(encodeRecord(H("c"), "whole", { len: 8192, data }));
    expect(plain.kind === "whole" && plain.cvs === undefined).toBe(true);
    // A flag without the bytes is refused.
    expect(() => decodeRecord(rec.subarray(0, rec.length - 1))).toThrow(RangeError);
  });
  it("round-trip an index and its tail, and refuse a tail that does not fit the file", () => {
    const entries = [
      { hash: H("a"), offset: 8, length: 100, kind: "whole" as const },
      { hash: H("c"), offset: 2 ** 33 + 5, length: 7, kind: "delta" as const, base: H("a") },
    ];
    const idx = encodeIndex(entries);
    expect(decodeIndex(idx, 2)).toEqual(entries);
    expect(() => decodeIndex(idx.subarray(0, 50), 2)).toThrow(RangeError);
    const tail = { count: 2, indexOffset: 1000, indexLength: idx.length, crc32c: 7 };
    expect(decodeTail(encodeTail(tail), 1000 + idx.length + TAIL_BYTES)).toEqual(tail);
    expect(() => decodeTail(encodeTail(tail), 999)).toThrow(RangeError);
  });
});

describe("page deltas", () => {
  it("rebuild a chunk from its keyframe: changed, zeroed, grown and shrunk", () => {
    const key = Buffer.concat([page(1), page(2), page(3)]);
    expect(
      applyPages(key, {
        len: 4 * 4096 - 100,
        pages: [1, 2, 3],
        zero: [false, true, false],
        data: Buffer.concat([page(9), page(7, 4096 - 100)]),
      })?.equals(Buffer.concat([page(1), page(9), page(0), page(7, 4096 - 100)])),
    ).toBe(true);
    expect(applyPages(key, { len: 4096, pages: [], zero: [], data: Buffer.alloc(0) })?.equals(page(1))).toBe(true);
    expect(applyPages(undefined, { len: 4096, pages: [1], zero: [false], data: page(1) })).toBeUndefined();
    expect(applyPages(undefined, { len: 8192, pages: [0], zero: [false], data: page(1, 100) })).toBeUndefined();
    expect(applyPages(key, { len: 8192, pages: [1, 0], zero: [true, true], data: Buffer.alloc(0) })).toBeUndefined();
  });
  it("merge the pages an older delta listed with the ones that changed now", () => {
    const key = Buffer.concat([page(1), page(2), page(3), page(4)]);
    const v2 = Buffer.concat([page(1), page(5), page(3), page(4)]);
    const v3 = Buffer.concat([page(1), page(5), page(3), page(0)]);
    const d = mergePages(v3, [1], [3], (j) => v3.subarray(j * 4096, (j + 1) * 4096).every((b) => b === 0));
    expect(d.pages).toEqual([1, 3]);
    expect(d.zero).toEqual([false, true]);
    expect(applyPages(key, { len: v3.length, ...d })?.equals(v3)).toBe(true);
    expect(applyPages(key, { len: v2.length, pages: [1], zero: [false], data: page(5) })?.equals(v2)).toBe(true);
  });
});

describe("stacked deltas", () => {
  // A keyframe of 8 pages, a base delta against it and newer pages, as page -> value (0: zero page).
  const set = fc
    .uniqueArray(fc.integer({ min: 0, max: 7 }), { maxLength: 8 })
    .chain((pages) =>
      fc
        .array(fc.integer({ min: 0, max: 3 }), { minLength: pages.length, maxLength: pages.length })
        .map((vals) => ({ pages: [...pages].sort((a, b) => a - b), vals })),
    );
  const toSet = (s: { pages: number[]; vals: number[] }) => {
    const vals = s.pages.map((j) => s.vals[s.pages.indexOf(j)]!);
    return {
      pages: s.pages,
      zero: vals.map((v) => v === 0),
      data: Buffer.concat(vals.filter((v) => v !== 0).map((v) => page(v + 10))),
    };
  };
  it("rebuild what the base rebuilt with the newer pages written over it (property)", () => {
    const key = Buffer.concat(Array.from({ length: 8 }, (_, j) => page(j + 1)));
    fc.assert(
      fc.property(set, set, (o, n) => {
        const older = toSet(o);
        const newer = toSet(n);
        const base = applyPages(key, { len: key.length, ...older })!;
        const want = applyPages(base, { len: key.length, ...newer })!;
        const d = pageSetOf(stackPages(key.length, older, newer)!);
        expect(applyPages(key, { len: key.length, ...d })?.equals(want)).toBe(true);
        expect(d.pages).toEqual([...new Set([...older.pages, ...newer.pages])].sort((a, b) => a - b));
      }),
      { seed: 0x5eed, numRuns: 200 },
    );
  });
  it("refuse page sets that do not fit the chunk", () => {
    expect(pagesOf(8192, { pages: [1, 0], zero: [true, true], data: Buffer.alloc(0) })).toBeUndefined();
    expect(pagesOf(8192, { pages: [2], zero: [true], data: Buffer.alloc(0) })).toBeUndefined();
    expect(pagesOf(8192, { pages: [1], zero: [false], data: page(1, 100) })).toBeUndefined();
    expect(
      stackPages(8192, { pages: [0], zero: [false], data: page(1, 5) }, { pages: [], zero: [], data: Buffer.alloc(0) }),
    ).toBeUndefined();
  });
});

describe("delta check", () => {
  it("accepts exactly the deltas that rebuild the chunk", () => {
    const isZero = (b: Buffer) => b.every((x) => x === 0);
    const key = Buffer.concat([page(1), page(2), page(3)]);
    const v = Buffer.concat([page(1), page(9), page(3), page(0, 100)]);
    expect(deltaRebuilds(key, v, [1, 3], isZero)).toBe(true);
    expect(deltaRebuilds(key, v, [1], isZero)).toBe(true); // the grown part is zero: a zero-extended keyframe
    expect(deltaRebuilds(key, v, [3], isZero)).toBe(false);
    expect(deltaRebuilds(key, Buffer.concat([page(1), page(2), page(3), page(5, 100)]), [], isZero)).toBe(false);
    expect(deltaRebuilds(key, Buffer.concat([page(1), page(2)]), [], isZero)).toBe(true);
  });
});
