import { describe, expect, it } from "vitest";
import { ChunkBatchTransferred } from "#schemas/index.js";
import { batchRange, MAX_CHUNKS_PER_BATCH, planVolumes } from "./planner.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe("batch size bound", () => {
  const largest = (plan: ReturnType<typeof planVolumes>): number =>
    Math.max(...Array.from({ length: plan.batchCount }, (_, b) => batchRange(plan, b)?.chunkCount ?? 0));

  it("keeps every batch to MAX_CHUNKS_PER_BATCH chunks, dense or sparse, smallest chunk, largest batch", () => {
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
    expect(largest(holes)).toBeLessThanOrEqual(MAX_CHUNKS_PER_BATCH);
  });

  it("so the largest ChunkBatchTransferred, a BLAKE3 per chunk included, stays far below 1 MiB (and 256 KiB)", () => {
    const chunks = Array.from({ length: MAX_CHUNKS_PER_BATCH }, (_, i) => ({
      offset: 2 ** 45 + i * 64 * KiB,
      length: 64 * KiB,
      crc32c: 0xffffffff,
      zero: false,
      wireBytes: 64 * KiB + 4096,
      blake3: `${"_".repeat(42)}w`,
    }));
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
    expect(JSON.stringify(event).length).toBeLessThan(160 * KiB);
  });
});
