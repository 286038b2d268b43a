import { MAX_SPARSE_BATCH_FACTOR, type DataMap, type PlannedVolume } from "#schemas/index.js";

export interface VolumeSize {
  kind: "disk" | "memory";
  sourcePath: string;
  sizeBytes: number;
  /** Allocated bytes per region, from the source probe (absent without SEEK_DATA). */
  dataMap?: DataMap | undefined;
  /** The source file's permission bits and owner, kept at the destination. */
  mode?: number | undefined;
  uid?: number | undefined;
  gid?: number | undefined;
}

export { MAX_SPARSE_BATCH_FACTOR };

/**
 * Chunks in one uniform batch (a volume without a data map, or a dense one), whatever the sizes
 * asked: 64 KiB chunks in 1 GiB batches would otherwise be 16384 chunks to a batch. The defaults
 * (4 MiB chunks, 64 MiB batches: 16 chunks) are far below it.
 */
export const MAX_CHUNKS_PER_BATCH = 1024;

/**
 * Largest JSON of one chunk in a ChunkBatchTransferred, comma included: a 16-digit offset, a
 * 64 MiB length, a 10-digit CRC32C, `"zero":false`, a 9-digit wireBytes and a 43-character BLAKE3.
 */
export const MAX_CHUNK_ENTRY_BYTES = 156;

/**
 * Chunks in one batch sized by data, holes included: its ChunkBatchTransferred lists every chunk,
 * a hole chunk too (with the BLAKE3 of its zeros), so this bounds the event at 4096 ×
 * MAX_CHUNK_ENTRY_BYTES = 624 KiB plus its other fields, within the 1 MiB an event may be (the
 * event stream's and its mirrors' max_msg_size, the server's default max_payload). With 4 MiB
 * chunks a batch then spans up to 16 GiB of image, so a sparse disk's batch closes on its share
 * of data: at 10% data, 1 GiB of data spans about 10 GiB.
 */
export const MAX_EVENT_CHUNKS = 4096;

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
 * Splits each volume into chunks and the chunks into batches of about batchSizeBytes (and at most
 * MAX_CHUNKS_PER_BATCH chunks, MAX_EVENT_CHUNKS for a batch sized by data). Batches never span
 * volumes, so a batch is one file range and one destination file. With a data map,
 * a batch holds about batchSizeBytes of *data*: a mostly sparse image then needs a few batches
 * (each a connection, an fsync and an event) instead of one per batchSizeBytes of holes.
 */
export function planVolumes(volumes: VolumeSize[], chunkSizeBytes: number, batchSizeBytes: number): Plan {
  const chunksPerBatch = Math.min(MAX_CHUNKS_PER_BATCH, Math.max(1, Math.floor(batchSizeBytes / chunkSizeBytes)));
  let firstBatch = 0;
  let chunkCount = 0;
  let totalBytes = 0;
  const planned = volumes.map((v, index): PlannedVolume => {
    const chunks = Math.ceil(v.sizeBytes / chunkSizeBytes);
    const sized =
      v.dataMap === undefined
        ? undefined
        : batchesByData(v.dataMap, chunks, chunkSizeBytes, batchSizeBytes, chunksPerBatch);
    const batches = sized?.length ?? Math.ceil(chunks / chunksPerBatch);
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
    if (sized !== undefined) pv.batchChunks = sized;
    if (v.mode !== undefined) pv.mode = v.mode;
    if (v.uid !== undefined) pv.uid = v.uid;
    if (v.gid !== undefined) pv.gid = v.gid;
    firstBatch += batches;
    chunkCount += chunks;
    totalBytes += v.sizeBytes;
    return pv;
  });
  return { chunkSizeBytes, chunksPerBatch, volumes: planned, totalBytes, chunkCount, batchCount: firstBatch };
}

/**
 * Below this much data per batch, splitting a sparse volume further costs more in per-batch
 * overhead (connection, fsync, event) than it gains; nor below a quarter of the batch size, so
 * that large batches (1 GiB) do not end in many small ones (each an event).
 */
export const MIN_BALANCED_BATCH_BYTES = 16 * 1024 * 1024;

/** A batch sized by data takes this fraction of the volume's data not yet in a batch. */
export const DATA_SHARE_DIVISOR = 3;

/**
 * Chunks per batch from a data map: close a batch once it holds its share of data or
 * MAX_SPARSE_BATCH_FACTOR uniform batches' worth of chunks. The share is a third of the data
 * still to place (DATA_SHARE_DIVISOR), at most batchSizeBytes and at least the larger of
 * MIN_BALANCED_BATCH_BYTES and a quarter of batchSizeBytes: early batches are large, the last
 * ones small. A mover sends two batches at once, each on its own TCP connection; with equal
 * batches, whichever compresses worst runs last and alone, on a connection whose congestion
 * control learned half the link, and the link stays half used for up to a second at 50 ms RTT
 * (BENCHMARKS.md, "Shrinking batches"). Undefined when that would not lower the batch count (a
 * dense volume keeps the uniform layout).
 */
function batchesByData(
  map: DataMap,
  chunks: number,
  chunkSizeBytes: number,
  batchSizeBytes: number,
  chunksPerBatch: number,
): number[] | undefined {
  if (map.regionBytes % chunkSizeBytes !== 0 && chunkSizeBytes % map.regionBytes !== 0) return undefined;
  const dataOfChunk = (c: number): number => {
    const start = c * chunkSizeBytes;
    if (map.regionBytes >= chunkSizeBytes) {
      const region = Math.floor(start / map.regionBytes);
      return ((map.dataBytes[region] ?? map.regionBytes) * chunkSizeBytes) / map.regionBytes;
    }
    let sum = 0;
    for (let r = start / map.regionBytes; r < (start + chunkSizeBytes) / map.regionBytes; r++)
      sum += map.dataBytes[r] ?? map.regionBytes;
    return sum;
  };
  const maxChunks = Math.min(MAX_EVENT_CHUNKS, chunksPerBatch * MAX_SPARSE_BATCH_FACTOR);
  let left = 0;
  for (let c = 0; c < chunks; c++) left += dataOfChunk(c);
  const least = Math.max(MIN_BALANCED_BATCH_BYTES, Math.floor(batchSizeBytes / 4));
  const shareOf = (rest: number): number =>
    Math.min(batchSizeBytes, Math.max(least, Math.ceil(rest / DATA_SHARE_DIVISOR)));
  let share = shareOf(left);
  const sizes: number[] = [];
  let count = 0;
  let data = 0;
  for (let c = 0; c < chunks; c++) {
    const d = dataOfChunk(c);
    if (count > 0 && (count >= maxChunks || data + d > share)) {
      sizes.push(count);
      left -= data;
      share = shareOf(left);
      count = 0;
      data = 0;
    }
    count += 1;
    data += d;
  }
  if (count > 0) sizes.push(count);
  return sizes.length < Math.ceil(chunks / chunksPerBatch) ? sizes : undefined;
}

/** The range of batch `batch`; undefined when the plan has no such batch. */
export function batchRange(plan: Plan, batch: number): BatchRange | undefined {
  const vol = plan.volumes.find((v) => batch >= v.firstBatch && batch < v.firstBatch + v.batchCount);
  if (!vol) return undefined;
  const index = batch - vol.firstBatch;
  let firstChunk = index * plan.chunksPerBatch;
  let chunkCount = Math.min(plan.chunksPerBatch, vol.chunkCount - firstChunk);
  if (vol.batchChunks !== undefined) {
    firstChunk = vol.batchChunks.slice(0, index).reduce((a, b) => a + b, 0);
    chunkCount = vol.batchChunks[index] ?? 0;
  }
  const offset = firstChunk * plan.chunkSizeBytes;
  const length = Math.min(vol.sizeBytes, offset + chunkCount * plan.chunkSizeBytes) - offset;
  return { batch, volume: vol.index, firstChunk, chunkCount, offset, length };
}
