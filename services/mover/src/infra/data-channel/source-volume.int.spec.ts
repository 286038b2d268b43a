import { randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { analyzeChunkSync, crc32c, strongHashSync, zeroCopy } from "#native/index.js";
import { segmentsFromZeroPages } from "../../domain/data-channel/segments.js";
import { analyzeRuns, MAX_READ_RUNS, READ_THROUGH_HOLE_BYTES, readRuns, SourceVolume } from "./source-volume.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 4 * MiB;

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "dwcp-source-volume-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A sparse file of `size` bytes with random data at each [offset, length) and holes elsewhere. */
async function sparseFile(name: string, size: number, extents: Array<[number, number]>): Promise<string> {
  const path = join(work, name);
  const fh = await open(path, "w");
  try {
    await fh.truncate(size);
    for (const [offset, length] of extents) await fh.write(randomBytes(length), 0, length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return path;
}

describe.skipIf(!zeroCopy.available)("the source's reads of a sparse chunk", () => {
  it("read its data extents only, join holes under 64 KiB, and read a fragmented chunk whole", async () => {
    const path = await sparseFile("runs.img", 3 * CHUNK, [
      [CHUNK + 512 * KiB, 256 * KiB],
      [CHUNK + 512 * KiB + 256 * KiB + 16 * KiB, 64 * KiB], // 16 KiB after the first: joined
      [CHUNK + 3 * MiB, 128 * KiB], // far from both: a run of its own
      ...Array.from({ length: 2 * MAX_READ_RUNS }, (_, i): [number, number] => [2 * CHUNK + i * 32 * KiB, 4 * KiB]),
    ]);
    const fh = await open(path, "r");
    try {
      expect(readRuns(fh.fd, 0, CHUNK)).toEqual([]);
      expect(readRuns(fh.fd, CHUNK, CHUNK)).toEqual([
        { start: 512 * KiB, end: 512 * KiB + 256 * KiB + 16 * KiB + 64 * KiB },
        { start: 3 * MiB, end: 3 * MiB + 128 * KiB },
      ]);
      // 4 KiB of data every 32 KiB: holes of 28 KiB, all joined into one run.
      expect(readRuns(fh.fd, 2 * CHUNK, CHUNK)).toEqual([
        { start: 0, end: (2 * MAX_READ_RUNS - 1) * 32 * KiB + 4 * KiB },
      ]);
      expect(28 * KiB).toBeLessThan(READ_THROUGH_HOLE_BYTES);
    } finally {
      await fh.close();
    }
  });

  it("a chunk with more runs than MAX_READ_RUNS is read as one", async () => {
    const extents = Array.from({ length: MAX_READ_RUNS + 1 }, (_, i): [number, number] => [
      i * 2 * READ_THROUGH_HOLE_BYTES,
      4 * KiB,
    ]);
    const size = (MAX_READ_RUNS + 1) * 2 * READ_THROUGH_HOLE_BYTES;
    const path = await sparseFile("fragmented.img", size, extents);
    const fh = await open(path, "r");
    try {
      expect(readRuns(fh.fd, 0, size)).toEqual([{ start: 0, end: size }]);
      expect(readRuns(fh.fd, 0, size - 2 * READ_THROUGH_HOLE_BYTES)).toHaveLength(MAX_READ_RUNS);
    } finally {
      await fh.close();
    }
  });

  it("give the file's bytes, holes as zeros, whatever the buffer held before", async () => {
    const path = await sparseFile("bytes.img", 2 * CHUNK + 12 * KiB, [
      [100 * KiB, 300 * KiB],
      [2 * MiB, 4 * KiB],
      [CHUNK - 8 * KiB, 16 * KiB], // across the chunk boundary
      [2 * CHUNK + 8 * KiB, 4 * KiB], // in the short last chunk
    ]);
    const whole = await readFile(path);
    const source = await SourceVolume.open(path, whole.length);
    try {
      const buffer = Buffer.alloc(CHUNK, 0xa5);
      for (let offset = 0; offset < whole.length; offset += CHUNK) {
        const length = Math.min(CHUNK, whole.length - offset);
        buffer.fill(0xa5);
        const c = await source.prepare(offset, length, buffer);
        const want = whole.subarray(offset, offset + length);
        expect(Buffer.compare(Buffer.from(c.data ?? []), want), `chunk at ${offset}`).toBe(0);
        expect(c.crc32c).toBe(crc32c(want));
        expect(c.blake3).toBe(strongHashSync(want).toString("base64url"));
        expect(c.segments).toEqual(segmentsFromZeroPages(analyzeChunkSync(want).zeroPages, length));
      }
    } finally {
      await source.close();
    }
  });

  it("analyze runs as the whole chunk would be, zero pages inside a run included", async () => {
    const data = new Uint8Array(64 * KiB + 512);
    data.fill(7, 8 * KiB, 12 * KiB);
    data.fill(9, 40 * KiB + 100, 44 * KiB); // a run with a zero page before its data
    data[64 * KiB + 3] = 1; // in the short last page
    const want = analyzeChunkSync(data);
    for (const runs of [
      [
        { start: 8 * KiB, end: 12 * KiB },
        { start: 36 * KiB, end: 44 * KiB },
        { start: 64 * KiB, end: data.length },
      ],
      [{ start: 0, end: data.length }],
      [
        { start: 8 * KiB, end: 12 * KiB + 1 },
        { start: 36 * KiB, end: data.length },
      ], // unaligned: analyzed whole
    ]) {
      const got = await analyzeRuns(data, runs);
      expect({ ...got, crc32c: got.crc32c >>> 0 }).toEqual({ ...want, crc32c: want.crc32c >>> 0 });
    }
    const zeros = await analyzeRuns(new Uint8Array(16 * KiB), []);
    expect(zeros).toEqual(analyzeChunkSync(new Uint8Array(16 * KiB)));
  });
});
