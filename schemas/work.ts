import { z } from "zod";
import { HostId, Id, VolumeKind } from "./common.js";

const Uint = z.number().int().nonnegative();

/**
 * One unit of mover work: a run of whole chunks of one volume. Published by the coordinator to
 * dwcp.work.<source host>; the msgID is `<migrationId>.b<batch>.a<attempt>`.
 */
export const TransferBatch = z.object({
  type: z.literal("TransferBatch"),
  version: z.literal(1),
  migrationId: Id,
  batch: Uint,
  attempt: Uint,
  sourceHost: HostId,
  destHost: HostId,
  destDir: z.string(),
  volume: z.object({
    index: Uint,
    kind: VolumeKind,
    sourcePath: z.string(),
    destName: z.string(),
    sizeBytes: Uint,
  }),
  chunkSizeBytes: Uint,
  firstChunk: Uint,
  chunkCount: Uint,
  bandwidthLimitBytesPerSec: z.number().int().positive().optional(),
  /**
   * The migration's `verify` option: the destination reads the batch back after its fsync and
   * checks it. Absent (items of older coordinators): true.
   */
  verify: z.boolean().optional(),
});
export type TransferBatch = z.infer<typeof TransferBatch>;
