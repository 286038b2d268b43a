import type { BatchBegin, ChunkHeader } from "./frames.js";

/** Byte range of chunk `index` of a volume; the last chunk may be short. */
export function chunkRange(
  volumeSizeBytes: number,
  chunkSizeBytes: number,
  index: number,
): { offset: number; length: number } {
  const offset = index * chunkSizeBytes;
  return { offset, length: Math.max(0, Math.min(chunkSizeBytes, volumeSizeBytes - offset)) };
}

/** Byte range [start, end) of a batch's chunks in its volume. */
export function batchRange(b: BatchBegin): { start: number; end: number } {
  const start = b.firstChunk * b.chunkSizeBytes;
  return { start, end: Math.min(b.volumeSizeBytes, start + b.chunkCount * b.chunkSizeBytes) };
}

/** Why a BATCH_BEGIN describes chunks that do not exist in the volume, or undefined. */
export function batchProblem(b: BatchBegin): string | undefined {
  const chunksInVolume = Math.ceil(b.volumeSizeBytes / b.chunkSizeBytes);
  if (b.firstChunk + b.chunkCount > chunksInVolume) {
    return `chunks ${b.firstChunk}..${b.firstChunk + b.chunkCount - 1} exceed the volume's ${chunksInVolume} chunks`;
  }
  return undefined;
}

/** Why a CHUNK does not belong to the batch (wrong place or length), or undefined. */
export function chunkProblem(b: BatchBegin, h: ChunkHeader): string | undefined {
  if (h.offset % b.chunkSizeBytes !== 0) return `offset ${h.offset} is not on a chunk boundary`;
  const index = h.offset / b.chunkSizeBytes;
  if (index < b.firstChunk || index >= b.firstChunk + b.chunkCount) {
    return `chunk ${index} is not in this batch (${b.firstChunk}..${b.firstChunk + b.chunkCount - 1})`;
  }
  const expected = chunkRange(b.volumeSizeBytes, b.chunkSizeBytes, index).length;
  if (h.length !== expected) return `chunk ${index} has length ${h.length}, expected ${expected}`;
  return undefined;
}
