import type { PlannedVolume } from "../../../../../schemas/index.js";

export interface VolumeSize {
  kind: "disk" | "memory";
  sourcePath: string;
  sizeBytes: number;
}

export interface Plan {
  chunkSizeBytes: number;
  chunksPerBatch: number;
  volumes: PlannedVolume[];
  totalBytes: number;
  chunkCount: number;
  batchCount: number;
}

/** One work item's range: whole chunks of one volume. */
export interface BatchRange {
  batch: number;
  volume: number;
  firstChunk: number;
  chunkCount: number;
  offset: number;
  length: number;
}

export const basename = (path: string): string => path.slice(path.lastIndexOf("/") + 1);

/**
 * Splits each volume into chunks and the chunks into batches of about batchSizeBytes. Batches
 * never span volumes, so a batch is one file range and one destination file.
 */
export function planVolumes(volumes: VolumeSize[], chunkSizeBytes: number, batchSizeBytes: number): Plan {
  const chunksPerBatch = Math.max(1, Math.floor(batchSizeBytes / chunkSizeBytes));
  let firstBatch = 0;
  let chunkCount = 0;
  let totalBytes = 0;
  const planned = volumes.map((v, index): PlannedVolume => {
    const chunks = Math.ceil(v.sizeBytes / chunkSizeBytes);
    const batches = Math.ceil(chunks / chunksPerBatch);
    const pv: PlannedVolume = {
      index,
      kind: v.kind,
      sourcePath: v.sourcePath,
      destName: basename(v.sourcePath),
      sizeBytes: v.sizeBytes,
      chunkCount: chunks,
      firstBatch,
      batchCount: batches,
    };
    firstBatch += batches;
    chunkCount += chunks;
    totalBytes += v.sizeBytes;
    return pv;
  });
  return { chunkSizeBytes, chunksPerBatch, volumes: planned, totalBytes, chunkCount, batchCount: firstBatch };
}

/** The range of batch `batch`; undefined when the plan has no such batch. */
export function batchRange(plan: Plan, batch: number): BatchRange | undefined {
  const vol = plan.volumes.find((v) => batch >= v.firstBatch && batch < v.firstBatch + v.batchCount);
  if (!vol) return undefined;
  const firstChunk = (batch - vol.firstBatch) * plan.chunksPerBatch;
  const chunkCount = Math.min(plan.chunksPerBatch, vol.chunkCount - firstChunk);
  const offset = firstChunk * plan.chunkSizeBytes;
  const length = Math.min(vol.sizeBytes, offset + chunkCount * plan.chunkSizeBytes) - offset;
  return { batch, volume: vol.index, firstChunk, chunkCount, offset, length };
}
