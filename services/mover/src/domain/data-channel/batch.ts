import { MAX_DATA_STREAMS } from "#schemas/index.js";
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
  if (h.base !== undefined && b.incremental !== true) return "a BASE chunk in a batch that is not incremental";
  if (h.offset % b.chunkSizeBytes !== 0) return `offset ${h.offset} is not on a chunk boundary`;
  const index = h.offset / b.chunkSizeBytes;
  if (index < b.firstChunk || index >= b.firstChunk + b.chunkCount) {
    return `chunk ${index} is not in this batch (${b.firstChunk}..${b.firstChunk + b.chunkCount - 1})`;
  }
  const expected = chunkRange(b.volumeSizeBytes, b.chunkSizeBytes, index).length;
  if (h.length !== expected) return `chunk ${index} has length ${h.length}, expected ${expected}`;
  return undefined;
}

/** Below this round-trip time a link is local: one connection per batch keeps up. */
export const WAN_RTT_US = 2_000;
/**
 * Connections a batch is striped over on a WAN link whose congestion control backs off on loss
 * (CUBIC, Reno), unless the migration says otherwise: one such stream on a lossy long link is
 * held far below the link's rate.
 */
export const DEFAULT_WAN_STREAMS = 4;
/** Most connections one batch is striped over. */
export const MAX_STREAMS = MAX_DATA_STREAMS;

/**
 * How many connections to stripe a batch over: what the migration asked for, else on a link
 * whose RTT says WAN DEFAULT_WAN_STREAMS, or 1 where the link runs BBR (its rate does not fall
 * with random loss, and every extra stream costs a handshake, a ramp-up from nothing and its own
 * fsync: measured slower on the emulated WAN), and 1 on a local link; never more than the batch
 * has chunks.
 */
export function streamsFor(
  requested: number | undefined,
  link: { rttUs?: number | undefined; congestion?: string | undefined } | undefined,
  chunkCount: number,
): number {
  const wan = (link?.rttUs ?? 0) >= WAN_RTT_US;
  const wanted = requested ?? (wan && link?.congestion !== "bbr" ? DEFAULT_WAN_STREAMS : 1);
  return Math.max(1, Math.min(wanted, MAX_STREAMS, chunkCount));
}

/**
 * Split chunks [first, first + count) into `n` contiguous runs whose sizes differ by at most one
 * (contiguous, so each connection writes one region of the file). Empty runs are left out.
 */
export function stripeRuns(first: number, count: number, n: number): { firstChunk: number; chunkCount: number }[] {
  const runs: { firstChunk: number; chunkCount: number }[] = [];
  const base = Math.floor(count / n);
  const extra = count % n;
  let at = first;
  for (let i = 0; i < n; i++) {
    const chunkCount = base + (i < extra ? 1 : 0);
    if (chunkCount > 0) runs.push({ firstChunk: at, chunkCount });
    at += chunkCount;
  }
  return runs;
}
