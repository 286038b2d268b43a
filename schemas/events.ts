import { z } from "zod";
import { COMMAND_TYPES } from "./commands.js";
import {
  BandwidthLimit,
  Priority,
  Weight,
  Blake3Hash,
  ChunkSize,
  Destination,
  FailureCode,
  FileOwnership,
  HostId,
  LiveMigrationOptions,
  MigrationMode,
  Id,
  MAX_BATCHES,
  MAX_CHUNK_BYTES,
  MAX_CHUNKS_PER_BATCH,
  MAX_MESSAGE_CHARS,
  MAX_NAME_CHARS,
  MAX_PATH_CHARS,
  MAX_SPARSE_BATCH_FACTOR,
  MAX_VOLUMES,
  MigrationOptions,
  RejectionReason,
  Source,
  Timestamp,
  Uint,
  VolumeKind,
} from "./common.js";

const base = { migrationId: Id, at: Timestamp, version: z.literal(1) };
const Crc = z.number().int().min(0).max(0xffffffff);
const Path = z.string().max(MAX_PATH_CHARS);
const Message = z.string().max(MAX_MESSAGE_CHARS);
/** Chunks one batch may hold: a batch sized by data holds up to MAX_SPARSE_BATCH_FACTOR uniform ones. */
const MAX_BATCH_CHUNKS = MAX_CHUNKS_PER_BATCH * MAX_SPARSE_BATCH_FACTOR;
/** Milliseconds, up to about 285 years. */
const Ms = z.number().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const MigrationRequested = z.object({
  type: z.literal("MigrationRequested"),
  ...base,
  commandId: Id,
  vm: z.string().max(256),
  source: Source,
  destination: Destination,
  options: MigrationOptions,
  /** Absent: "files". */
  mode: MigrationMode.optional(),
  /** A live migration's options, as the command gave them. */
  live: LiveMigrationOptions.optional(),
});

export const MigrationRejected = z.object({
  type: z.literal("MigrationRejected"),
  ...base,
  commandId: z.string().max(64).optional(),
  reason: RejectionReason,
  message: Message,
});

/** Why a command about a migration was refused while the migration itself goes on (or stays ended). */
export const CommandRejectionReason = z.enum([
  ...RejectionReason.options,
  /** A CancelMigration or SetMigrationOptions for a migration that already ended: nothing to change. */
  "MIGRATION_ENDED",
]);

/**
 * A command refused without changing the migration it names: a StartMigration reusing the id of
 * another command's migration, a CancelMigration of an unknown or ended one, a malformed command
 * naming a migration that exists. Recorded on the subject of the migration the sender named, so
 * whoever watches it sees the refusal; folds keep it apart from the migration's own outcome.
 */
export const CommandRejected = z.object({
  type: z.literal("CommandRejected"),
  ...base,
  commandId: z.string().max(64).optional(),
  /** The refused command's type, when it could be read. */
  command: z.enum(COMMAND_TYPES).optional(),
  reason: CommandRejectionReason,
  message: Message,
});

export const PlannedVolume = z.object({
  index: Uint,
  kind: VolumeKind,
  /** Canonical source path (symlinks resolved) under a root of the source mover. */
  sourcePath: Path,
  /** File name at the destination (the source's basename). */
  destName: z.string().max(MAX_NAME_CHARS),
  sizeBytes: Uint,
  chunkCount: Uint,
  firstBatch: Uint.max(MAX_BATCHES),
  batchCount: Uint.max(MAX_BATCHES),
  /**
   * Chunks in each of this volume's batches, when the planner sized batches by the data they
   * hold (sparse volumes); absent means every batch has chunksPerBatch chunks but the last.
   */
  batchChunks: z.array(Uint.min(1).max(MAX_BATCH_CHUNKS)).max(MAX_BATCHES).optional(),
  /** The source file's mode and owner, for the destination file. */
  ...FileOwnership,
});

export const MigrationPlanned = z
  .object({
    type: z.literal("MigrationPlanned"),
    ...base,
    /** Canonical destination directory under a root of the destination mover. */
    destDir: Path,
    chunkSizeBytes: ChunkSize,
    chunksPerBatch: Uint.min(1).max(MAX_CHUNKS_PER_BATCH),
    volumes: z.array(PlannedVolume).min(1).max(MAX_VOLUMES),
    totalBytes: Uint,
    chunkCount: Uint,
    batchCount: Uint.max(MAX_BATCHES),
  })
  .refine((plan) => guardedPlanProblem(plan) === undefined, {
    error: (issue) => guardedPlanProblem(issue.input) ?? "the plan is inconsistent",
  });

/** planProblem of a value zod may not have fully checked yet (refinements can run after other issues). */
function guardedPlanProblem(plan: unknown): string | undefined {
  try {
    return planProblem(plan as Parameters<typeof planProblem>[0]);
  } catch {
    return "the plan is malformed";
  }
}

export const TransferredChunk = z.object({
  offset: Uint,
  length: Uint.max(MAX_CHUNK_BYTES),
  crc32c: Crc,
  /** All-zero chunk: nothing was sent, the destination keeps a hole. */
  zero: z.boolean(),
  /** Bytes on the wire: at most the chunk, or a little more when it did not compress. */
  wireBytes: Uint.max(2 * MAX_CHUNK_BYTES),
  /**
   * BLAKE3-256 of the chunk's bytes as the source read them (zero chunks included: the hash of
   * `length` zeros). Absent in events of movers that predate it: the volume is then unverifiable
   * by hash and the destination checks its CRC32C only.
   */
  blake3: Blake3Hash.optional(),
});

/**
 * Where a batch's logical bytes went on the way to the wire. Optional in version 1 (movers that
 * predate it leave it out): zeroSkipped (zero pages and holes, never sent) + data = the logical
 * bytes; of data, packedIn bytes were sent compressed as packedOut bytes, and baseReused bytes
 * (an incremental migration's chunks the destination's base already had) were not sent at all.
 */
export const ByteBreakdown = z.object({
  zeroSkipped: Uint,
  data: Uint,
  packedIn: Uint,
  packedOut: Uint,
  baseReused: Uint.optional(),
});

/** The codec a batch's chunks were compressed with (level: zstd's, else 0). */
export const BatchCompression = z.object({
  codec: z.enum(["none", "lz4", "zstd"]),
  level: z.number().int().min(-7).max(19),
});

export const ChunkBatchTransferred = z.object({
  type: z.literal("ChunkBatchTransferred"),
  ...base,
  batch: Uint,
  attempt: Uint,
  host: HostId,
  chunks: z.array(TransferredChunk).max(MAX_BATCH_CHUNKS),
  bytes: Uint,
  wireBytes: Uint,
  breakdown: ByteBreakdown.optional(),
  compression: BatchCompression.optional(),
  durationMs: Ms,
});

export const ChunkBatchFailed = z.object({
  type: z.literal("ChunkBatchFailed"),
  ...base,
  batch: Uint,
  attempt: Uint,
  host: HostId,
  code: FailureCode,
  retryable: z.boolean(),
  message: Message,
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
    /** Sums of the batches' breakdowns (optional in version 1; batches without one add 0). */
    zeroSkippedBytes: Uint.optional(),
    packedInBytes: Uint.optional(),
    packedOutBytes: Uint.optional(),
    /** Bytes of chunks taken from the destination's base (incremental migrations), not sent. */
    baseReusedBytes: Uint.optional(),
  }),
  durationMs: Ms,
  volumes: z
    .array(
      z.object({
        index: Uint,
        destPath: Path,
        sizeBytes: Uint,
        crc32c: Crc,
        /**
         * BLAKE3-256 over the volume's chunk hashes in offset order (volumeHash), as logged by the
         * source and checked by the destination before finalize; absent if any chunk had no hash.
         */
        blake3: Blake3Hash.optional(),
      }),
    )
    .max(MAX_VOLUMES),
});

export const MigrationFailed = z.object({
  type: z.literal("MigrationFailed"),
  ...base,
  code: FailureCode,
  message: Message,
  batch: Uint.optional(),
});

export const MigrationCancelled = z.object({
  type: z.literal("MigrationCancelled"),
  ...base,
  commandId: Id,
  reason: z.string().max(1024).optional(),
});

/**
 * A running migration's options changed (SetMigrationOptions); the event carries all of them as
 * they now stand: an absent limit means none, an absent weight or priority the default. Movers
 * running its batches apply them at once; later work items carry them.
 */
export const MigrationOptionsChanged = z.object({
  type: z.literal("MigrationOptionsChanged"),
  ...base,
  commandId: Id,
  bandwidthLimitBytesPerSec: BandwidthLimit.optional(),
  weight: Weight.optional(),
  priority: Priority.optional(),
});

/** Live-migration phases a progress event reports, in order. */
export const LiveProgressPhase = z.enum(["mirror", "mirror-ready", "precopy", "switchover"]);
/** Where a live migration was when it failed or was cancelled. */
export const LiveFailedPhase = z.enum(["prepare", "mirror", "precopy", "switchover", "finish"]);
/** A QEMU block node name (disk id in the VM definition). */
const DiskId = z.string().min(1).max(MAX_NAME_CHARS);

/**
 * The source mover began a live migration: the destination prepared its QEMU (`-incoming defer`)
 * and its disk exports, and the tunnels are up. Recorded by the source host's mover.
 */
export const LiveMigrationStarted = z.object({
  type: z.literal("LiveMigrationStarted"),
  ...base,
  /** The source host, whose mover runs the migration. */
  host: HostId,
  vm: z.string().max(MAX_NAME_CHARS),
  memoryMiB: Uint,
  disks: z.array(z.object({ id: DiskId, sizeBytes: Uint })).max(MAX_VOLUMES),
});

/**
 * How far a live migration is: the disk mirror's bytes, then RAM precopy passes. The mover
 * records at most one per phase change and one per report interval (default 2 s).
 */
export const LiveMigrationProgress = z.object({
  type: z.literal("LiveMigrationProgress"),
  ...base,
  host: HostId,
  phase: LiveProgressPhase,
  /** Mirror bytes copied so far and in all, over every disk. */
  mirrorDoneBytes: Uint.optional(),
  mirrorTotalBytes: Uint.optional(),
  /** Precopy pass (dirty-bitmap syncs so far). */
  precopyPass: Uint.optional(),
  /** RAM left to copy in this pass, and sent so far. */
  remainingBytes: Uint.optional(),
  transferredBytes: Uint.optional(),
  /** Pages the guest dirties per second, as QEMU measured it. */
  dirtyPagesPerSec: Uint.optional(),
  elapsedMs: Ms.optional(),
  /** Precopy stalled: the rung applied from now on (auto-converge's throttle, then postcopy). */
  rung: z.enum(["auto-converge", "postcopy"]).optional(),
  /** Auto-converge's vCPU throttle when the stall was seen, percent. */
  throttlePct: z.number().int().min(0).max(100).optional(),
});

/** The live migration completed: the guest runs at the destination, the source QEMU is gone. */
export const LiveMigrationCompleted = z.object({
  type: z.literal("LiveMigrationCompleted"),
  ...base,
  host: HostId,
  /** From the start of the migration to the destination guest running. */
  totalMs: Ms,
  /** QEMU's downtime figure: source stop to the end of the stream. */
  downtimeMs: Ms,
  /** The guest's pause as the source mover saw it: its STOP event to the destination running. */
  pausedMs: Ms,
  ramTransferredBytes: Uint,
  mirrorBytes: Uint,
});

/**
 * The live migration failed or was cancelled at `phase` and was rolled back: the source guest
 * runs (sourceRunning), the destination's QEMU and partial disks are removed.
 */
export const LiveMigrationFailed = z.object({
  type: z.literal("LiveMigrationFailed"),
  ...base,
  host: HostId,
  code: z.enum(["LIVE_MIGRATION_FAILED", "LIVE_MIGRATION_CANCELLED"]),
  phase: LiveFailedPhase,
  message: Message,
  sourceRunning: z.boolean(),
});

/**
 * What is impossible about a plan, or undefined when it is consistent: the numbers a fold sizes
 * its state by must agree with each other, so that a schema-valid event cannot ask the
 * coordinator for four billion batches. Holds for every plan the planner makes.
 */
export function planProblem(plan: {
  chunkSizeBytes: number;
  chunksPerBatch: number;
  volumes: Array<z.infer<typeof PlannedVolume>>;
  totalBytes: number;
  chunkCount: number;
  batchCount: number;
}): string | undefined {
  let batches = 0;
  let chunks = 0;
  let bytes = 0;
  for (const [i, v] of plan.volumes.entries()) {
    const at = `volumes.${i}`;
    if (v.index !== i) return `${at}.index is ${v.index}, expected ${i}`;
    if (v.firstBatch !== batches) return `${at}.firstBatch is ${v.firstBatch}, expected ${batches}`;
    const maxChunks = Math.ceil(v.sizeBytes / plan.chunkSizeBytes);
    if (v.chunkCount > maxChunks) return `${at}.chunkCount ${v.chunkCount} exceeds ceil(sizeBytes / chunkSizeBytes)`;
    if (v.batchCount > v.chunkCount) return `${at}.batchCount ${v.batchCount} exceeds its chunkCount ${v.chunkCount}`;
    if (v.batchChunks !== undefined) {
      if (v.batchChunks.length !== v.batchCount) return `${at}.batchChunks does not have batchCount entries`;
      if (v.batchChunks.reduce((a, b) => a + b, 0) !== v.chunkCount)
        return `${at}.batchChunks do not sum to chunkCount`;
    } else if (v.batchCount * plan.chunksPerBatch < v.chunkCount) {
      return `${at}: ${v.batchCount} batches of ${plan.chunksPerBatch} chunks cannot hold ${v.chunkCount} chunks`;
    }
    batches += v.batchCount;
    chunks += v.chunkCount;
    bytes += v.sizeBytes;
  }
  if (batches !== plan.batchCount) return `batchCount ${plan.batchCount} is not the volumes' sum ${batches}`;
  if (chunks !== plan.chunkCount) return `chunkCount ${plan.chunkCount} is not the volumes' sum ${chunks}`;
  if (bytes !== plan.totalBytes) return `totalBytes ${plan.totalBytes} is not the volumes' sum ${bytes}`;
  return undefined;
}

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
  MigrationOptionsChanged,
  CommandRejected,
  LiveMigrationStarted,
  LiveMigrationProgress,
  LiveMigrationCompleted,
  LiveMigrationFailed,
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
export type MigrationOptionsChanged = z.infer<typeof MigrationOptionsChanged>;
export type CommandRejected = z.infer<typeof CommandRejected>;
export type LiveMigrationStarted = z.infer<typeof LiveMigrationStarted>;
export type LiveMigrationProgress = z.infer<typeof LiveMigrationProgress>;
export type LiveMigrationCompleted = z.infer<typeof LiveMigrationCompleted>;
export type LiveMigrationFailed = z.infer<typeof LiveMigrationFailed>;
export type CommandRejectionReason = z.infer<typeof CommandRejectionReason>;
export type MigrationEvent = z.infer<typeof MigrationEvent>;
