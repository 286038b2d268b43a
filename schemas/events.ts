import { z } from "zod";
import {
  Blake3Hash,
  Destination,
  FailureCode,
  HostId,
  Id,
  MigrationOptions,
  RejectionReason,
  Source,
  Timestamp,
  VolumeKind,
} from "./common.js";

const base = { migrationId: Id, at: Timestamp, version: z.literal(1) };
const Uint = z.number().int().nonnegative();
const Crc = z.number().int().min(0).max(0xffffffff);

export const MigrationRequested = z.object({
  type: z.literal("MigrationRequested"),
  ...base,
  commandId: Id,
  vm: z.string(),
  source: Source,
  destination: Destination,
  options: MigrationOptions,
});

export const MigrationRejected = z.object({
  type: z.literal("MigrationRejected"),
  ...base,
  commandId: z.string().optional(),
  reason: RejectionReason,
  message: z.string(),
});

export const PlannedVolume = z.object({
  index: Uint,
  kind: VolumeKind,
  /** Canonical source path (symlinks resolved) under a root of the source mover. */
  sourcePath: z.string(),
  /** File name at the destination (the source's basename). */
  destName: z.string(),
  sizeBytes: Uint,
  chunkCount: Uint,
  firstBatch: Uint,
  batchCount: Uint,
  /**
   * Chunks in each of this volume's batches, when the planner sized batches by the data they
   * hold (sparse volumes); absent means every batch has chunksPerBatch chunks but the last.
   */
  batchChunks: z.array(Uint).optional(),
});

export const MigrationPlanned = z.object({
  type: z.literal("MigrationPlanned"),
  ...base,
  /** Canonical destination directory under a root of the destination mover. */
  destDir: z.string(),
  chunkSizeBytes: Uint,
  chunksPerBatch: Uint,
  volumes: z.array(PlannedVolume),
  totalBytes: Uint,
  chunkCount: Uint,
  batchCount: Uint,
});

export const TransferredChunk = z.object({
  offset: Uint,
  length: Uint,
  crc32c: Crc,
  /** All-zero chunk: nothing was sent, the destination keeps a hole. */
  zero: z.boolean(),
  wireBytes: Uint,
  /**
   * BLAKE3-256 of the chunk's bytes as the source read them (zero chunks included: the hash of
   * `length` zeros). Absent in events of movers that predate it: the volume is then unverifiable
   * by hash and the destination checks its CRC32C only.
   */
  blake3: Blake3Hash.optional(),
});

export const ChunkBatchTransferred = z.object({
  type: z.literal("ChunkBatchTransferred"),
  ...base,
  batch: Uint,
  attempt: Uint,
  host: HostId,
  chunks: z.array(TransferredChunk),
  bytes: Uint,
  wireBytes: Uint,
  durationMs: z.number().nonnegative(),
});

export const ChunkBatchFailed = z.object({
  type: z.literal("ChunkBatchFailed"),
  ...base,
  batch: Uint,
  attempt: Uint,
  host: HostId,
  code: FailureCode,
  retryable: z.boolean(),
  message: z.string(),
});

export const ChunkBatchRetried = z.object({
  type: z.literal("ChunkBatchRetried"),
  ...base,
  batch: Uint,
  /** The attempt number the new work item carries. */
  attempt: Uint,
  notBefore: Timestamp,
});

export const MigrationCompleted = z.object({
  type: z.literal("MigrationCompleted"),
  ...base,
  totals: z.object({
    bytes: Uint,
    zeroBytes: Uint,
    wireBytes: Uint,
    chunks: Uint,
    batches: Uint,
  }),
  durationMs: z.number().nonnegative(),
  volumes: z.array(
    z.object({
      index: Uint,
      destPath: z.string(),
      sizeBytes: Uint,
      crc32c: Crc,
      /**
       * BLAKE3-256 over the volume's chunk hashes in offset order (volumeHash), as logged by the
       * source and checked by the destination before finalize; absent if any chunk had no hash.
       */
      blake3: Blake3Hash.optional(),
    }),
  ),
});

export const MigrationFailed = z.object({
  type: z.literal("MigrationFailed"),
  ...base,
  code: FailureCode,
  message: z.string(),
  batch: Uint.optional(),
});

export const MigrationCancelled = z.object({
  type: z.literal("MigrationCancelled"),
  ...base,
  commandId: Id,
  reason: z.string().optional(),
});

export const MigrationEvent = z.discriminatedUnion("type", [
  MigrationRequested,
  MigrationRejected,
  MigrationPlanned,
  ChunkBatchTransferred,
  ChunkBatchFailed,
  ChunkBatchRetried,
  MigrationCompleted,
  MigrationFailed,
  MigrationCancelled,
]);

export type MigrationRequested = z.infer<typeof MigrationRequested>;
export type MigrationRejected = z.infer<typeof MigrationRejected>;
export type PlannedVolume = z.infer<typeof PlannedVolume>;
export type MigrationPlanned = z.infer<typeof MigrationPlanned>;
export type TransferredChunk = z.infer<typeof TransferredChunk>;
export type ChunkBatchTransferred = z.infer<typeof ChunkBatchTransferred>;
export type ChunkBatchFailed = z.infer<typeof ChunkBatchFailed>;
export type ChunkBatchRetried = z.infer<typeof ChunkBatchRetried>;
export type MigrationCompleted = z.infer<typeof MigrationCompleted>;
export type MigrationFailed = z.infer<typeof MigrationFailed>;
export type MigrationCancelled = z.infer<typeof MigrationCancelled>;
export type MigrationEvent = z.infer<typeof MigrationEvent>;
