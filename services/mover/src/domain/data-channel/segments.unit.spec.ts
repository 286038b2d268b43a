import { describe, expect, it } from "vitest";
import { batchProblem, chunkProblem, chunkRange } from "./batch.js";
import type { BatchBegin, ChunkHeader } from "./frames.js";
import { gapsOf, segmentsFromZeroPages, segmentTableProblem } from "./segments.js";

const P = 4096;

describe("segmentsFromZeroPages", () => {
  it("coalesces runs of non-zero pages", () => {
    const map = Uint8Array.from([1, 0, 0, 1, 0, 1, 1, 0]);
    expect(segmentsFromZeroPages(map, 8 * P)).toEqual([
      { relOffset: P, length: 2 * P },
      { relOffset: 4 * P, length: P },
      { relOffset: 7 * P, length: P },
    ]);
  });

  it("ends the last segment at a short chunk's end", () => {
    expect(segmentsFromZeroPages(Uint8Array.from([1, 0]), P + 10)).toEqual([{ relOffset: P, length: 10 }]);
  });

  it("gives no segments for an all-zero chunk and one for an all-data chunk", () => {
    expect(segmentsFromZeroPages(Uint8Array.from([1, 1, 1]), 3 * P)).toEqual([]);
    expect(segmentsFromZeroPages(Uint8Array.from([0, 0, 0]), 3 * P - 1)).toEqual([{ relOffset: 0, length: 3 * P - 1 }]);
  });

  it("refuses a map shorter than the chunk", () => {
    expect(() => segmentsFromZeroPages(Uint8Array.from([0]), 2 * P)).toThrow(RangeError);
  });
});

describe("gapsOf and segmentTableProblem", () => {
  it("lists the zero ranges around segments", () => {
    expect(gapsOf([{ relOffset: P, length: P }], 3 * P + 5)).toEqual([
      { relOffset: 0, length: P },
      { relOffset: 2 * P, length: P + 5 },
    ]);
    expect(gapsOf([], 100)).toEqual([{ relOffset: 0, length: 100 }]);
  });

  it("accepts a table produced from a zero map", () => {
    const segs = segmentsFromZeroPages(Uint8Array.from([0, 1, 0]), 2 * P + 7);
    expect(segmentTableProblem(segs, 2 * P + 7, P + 7)).toBeUndefined();
    expect(segmentTableProblem(segs, 2 * P + 7, P + 8)).toMatch(/carries/);
    expect(segmentTableProblem([{ relOffset: 0, length: 0 }], P, 0)).toMatch(/empty/);
  });
});

describe("batch geometry", () => {
  const begin: BatchBegin = {
    migrationId: "m",
    batch: 1,
    attempt: 0,
    destDir: "d",
    destName: "n",
    volumeSizeBytes: 10 * 65536 + 3,
    chunkSizeBytes: 65536,
    firstChunk: 8,
    chunkCount: 3,
  };
  const chunk = (offset: number, length: number): ChunkHeader => ({
    offset,
    length,
    crc32c: 0,
    zero: true,
    segments: [],
  });

  it("knows the short last chunk", () => {
    expect(chunkRange(begin.volumeSizeBytes, 65536, 10)).toEqual({ offset: 10 * 65536, length: 3 });
    expect(chunkProblem(begin, chunk(10 * 65536, 3))).toBeUndefined();
    expect(chunkProblem(begin, chunk(10 * 65536, 65536))).toMatch(/expected 3/);
  });

  it("takes a BASE chunk only in an incremental batch", () => {
    const base = { ...chunk(8 * 65536, 65536), zero: false, base: new Uint8Array(32) };
    expect(chunkProblem(begin, base)).toMatch(/not incremental/);
    expect(chunkProblem({ ...begin, incremental: true }, base)).toBeUndefined();
  });

  it("refuses chunks outside the batch or off a boundary", () => {
    expect(chunkProblem(begin, chunk(7 * 65536, 65536))).toMatch(/not in this batch/);
    expect(chunkProblem(begin, chunk(8 * 65536 + 1, 65536))).toMatch(/boundary/);
  });

  it("refuses batches past the end of the volume", () => {
    expect(batchProblem(begin)).toBeUndefined();
    expect(batchProblem({ ...begin, chunkCount: 4 })).toMatch(/exceed/);
  });
});
