import { z } from "zod";
import { VmName } from "./names.js";
import {
  ChunkSize,
  HostId,
  Id,
  LiveMigrationOptions,
  MAX_BATCHES,
  CompressionMode,
  MAX_DATA_STREAMS,
  MAX_CHUNKS_PER_BATCH,
  MAX_NAME_CHARS,
  MAX_PATH_CHARS,
  MAX_SPARSE_BATCH_FACTOR,
  Priority,
  Uint,
  VolumeKind,
  Weight,
} from "./common.js";

/**
 * One unit of mover work: a run of whole chunks of one volume. Published by the coordinator to
 * dwcp.work.<source host>; the msgID is `<migrationId>.b<batch>.a<attempt>`.
 */
export const TransferBatch = z
  .object({
    type: z.literal("TransferBatch"),
    version: z.literal(1),
    migrationId: Id,
    batch: Uint.max(MAX_BATCHES),
    attempt: Uint.max(1_000_000),
    sourceHost: HostId,
    destHost: HostId,
    destDir: z.string().max(MAX_PATH_CHARS),
    volume: z.object({
      index: Uint,
      kind: VolumeKind,
      sourcePath: z.string().max(MAX_PATH_CHARS),
      destName: z.string().max(MAX_NAME_CHARS),
      sizeBytes: Uint,
    }),
    chunkSizeBytes: ChunkSize,
    firstChunk: Uint,
    chunkCount: Uint.max(MAX_CHUNKS_PER_BATCH * MAX_SPARSE_BATCH_FACTOR),
    bandwidthLimitBytesPerSec: z.number().int().positive().optional(),
    /** The migration's weight and priority on a link it shares (see schemas/common.ts). Absent: defaults. */
    weight: Weight.optional(),
    priority: Priority.optional(),
    /** The migration's `streams` option: connections the batch is striped over. Absent: the mover decides. */
    streams: z.number().int().min(1).max(MAX_DATA_STREAMS).optional(),
    /** The migration's `compression` option. Absent: auto. */
    compression: CompressionMode.optional(),
    /**
     * The migration's `verify` option: the destination reads the batch back after its fsync and
     * checks it. Absent (items of older coordinators): true.
     */
    verify: z.boolean().optional(),
    /** The migration's `incremental` option: chunks may be sent as references to the destination's base. */
    incremental: z.boolean().optional(),
  })
  .refine((w) => w.firstChunk + w.chunkCount <= Math.ceil(w.volume.sizeBytes / w.chunkSizeBytes), {
    message: "the batch's chunks lie beyond the end of the volume",
  });
export type TransferBatch = z.infer<typeof TransferBatch>;

/**
 * A whole live migration as one unit of mover work: the source mover asks the destination to
 * prepare, runs it and records its events. Published by the coordinator to dwcp.work.<source
 * host>; the msgID is `<migrationId>.live`.
 */
export const LiveMigrate = z.object({
  type: z.literal("LiveMigrate"),
  version: z.literal(1),
  migrationId: Id,
  vm: VmName,
  sourceHost: HostId,
  destHost: HostId,
  destDir: z.string().max(MAX_PATH_CHARS),
  live: LiveMigrationOptions,
  /**
   * The migration's `compression` option, for the tunnels' source → destination bytes. Absent:
   * auto (none on a local link; across a WAN, chosen from the link's RTT and the spare cores).
   */
  compression: CompressionMode.optional(),
});
export type LiveMigrate = z.infer<typeof LiveMigrate>;
