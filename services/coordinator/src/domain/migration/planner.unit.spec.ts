import { describe, expect, it } from "vitest";
import { ChunkBatchTransferred } from "#schemas/index.js";
import { batchRange, MAX_CHUNK_ENTRY_BYTES, MAX_CHUNKS_PER_BATCH, MAX_EVENT_CHUNKS, planVolumes } from "./planner.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe("batch size bound", () => {
  const largest = (plan: ReturnType<typeof planVolumes>): number =>
    Math.max(...Array.from({ length: plan.batchCount }, (_, b) => batchRange(plan, b)?.chunkCount ?? 0));

  it("keeps a uniform batch to MAX_CHUNKS_PER_BATCH chunks and one sized by data to MAX_EVENT_CHUNKS", () => {
    const dense = planVolumes([{ kind: "disk", sourcePath: "/a/d.img", sizeBytes: 4 * GiB }], 64 * KiB, 1024 * MiB);
    expect(largest(dense)).toBe(MAX_CHUNKS_PER_BATCH);
    const holes = planVolumes(
      [
        {
          kind: "disk",
          sourcePath: "/a/h.img",
          sizeBytes: 64 * GiB,
          dataMap: { regionBytes: 16 * MiB, dataBytes: new Array<number>(4096).fill(0) },
        },
      ],
      64 * KiB,
      1024 * MiB,
    );
    expect(largest(holes)).toBe(MAX_EVENT_CHUNKS);
  });

  it("so the largest ChunkBatchTransferred, a BLAKE3 per chunk included, stays within 1 MiB", () => {
    const chunks = Array.from({ length: MAX_EVENT_CHUNKS }, (_, i) => ({
      offset: Number.MAX_SAFE_INTEGER - (MAX_EVENT_CHUNKS - i) * 64 * MiB,
      length: 64 * MiB,
      crc32c: 0xffffffff,
      zero: false,
      wireBytes: 2 * 64 * MiB,
      blake3: `${"_".repeat(42)}w`,
    }));
    for (const c of chunks) expect(JSON.stringify(c).length + 1).toBeLessThanOrEqual(MAX_CHUNK_ENTRY_BYTES);
    const event = ChunkBatchTransferred.parse({
      type: "ChunkBatchTransferred",
      migrationId: "m".repeat(64),
      at: "2026-01-01T00:00:00.000Z",
      version: 1,
      batch: 2 ** 32 - 1,
      attempt: 99,
      host: "h".repeat(48),
      chunks,
      bytes: 2 ** 45,
      wireBytes: 2 ** 45,
      durationMs: 1e9,
    });
    // The rest of the MiB is the event's other fields and the message's headers (msgID, signature).
    expect(JSON.stringify(event).length).toBeLessThan(640 * KiB);
  });
});

describe("batches sized by data", () => {
  const GIB_REGIONS = 16; // 64 MiB regions per GiB
  /** A sparse disk of `gib` GiB whose every `every`-th 64 MiB region is data, the rest holes. */
  const sparse = (gib: number, every: number): Parameters<typeof planVolumes>[0][number] => ({
    kind: "disk",
    sourcePath: "/a/disk.img",
    sizeBytes: gib * GiB,
    dataMap: {
      regionBytes: 64 * MiB,
      dataBytes: Array.from({ length: gib * GIB_REGIONS }, (_, r) => (r % every === 0 ? 64 * MiB : 0)),
    },
  });
  const ranges = (plan: ReturnType<typeof planVolumes>) =>
    Array.from({ length: plan.batchCount }, (_, b) => batchRange(plan, b)).filter((r) => r !== undefined);
  const dataOf = (r: { offset: number; length: number }, every: number): number => {
    let bytes = 0;
    // By 4 MiB chunk: a batch may start inside a 64 MiB region.
    for (let at = r.offset; at < r.offset + r.length; at += 4 * MiB)
      if (Math.floor(at / (64 * MiB)) % every === 0) bytes += 4 * MiB;
    return bytes;
  };

  it("closes a sparse disk's batch on its data, not the holes it spans: 100 GiB, 10% data, 1 GiB batches", () => {
    const plan = planVolumes([sparse(100, 10)], 4 * MiB, GiB);
    const data = 160 * 64 * MiB; // 10 GiB
    // About one batch per GiB of data, not one per 1024 chunks (25): 1 GiB batches while three
    // times that is left, then shrinking to a quarter of the batch size (each an event: at most
    // 2 events per GiB of data in all).
    expect(plan.batchCount).toBeGreaterThanOrEqual(Math.ceil(data / GiB));
    expect(plan.batchCount + 3).toBeLessThanOrEqual(2 * (data / GiB));
    for (const r of ranges(plan)) {
      expect(dataOf(r, 10)).toBeLessThanOrEqual(GiB);
      expect(r.chunkCount).toBeLessThanOrEqual(MAX_EVENT_CHUNKS);
    }
    // A batch closed on its data (not on the chunk cap), the last aside, holds a quarter GiB or more.
    const closedOnData = ranges(plan)
      .slice(0, -1)
      .filter((r) => r.chunkCount < MAX_EVENT_CHUNKS);
    expect(closedOnData.length).toBeGreaterThan(0);
    for (const r of closedOnData) expect(dataOf(r, 10)).toBeGreaterThanOrEqual(GiB / 4 - 4 * MiB);
  });

  it("still closes a batch at MAX_EVENT_CHUNKS chunks on a disk too sparse to fill it with data", () => {
    const plan = planVolumes([sparse(100, 50)], 4 * MiB, GiB); // 2% data: 2 GiB
    expect(plan.batchCount).toBe(Math.ceil((100 * GiB) / (4 * MiB) / MAX_EVENT_CHUNKS));
    expect(Math.max(...ranges(plan).map((r) => r.chunkCount))).toBe(MAX_EVENT_CHUNKS);
  });
});
