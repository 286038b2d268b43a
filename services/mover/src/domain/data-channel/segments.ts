/** A byte range inside one logical chunk. */
export interface Segment {
  relOffset: number;
  length: number;
}

export const SEGMENT_PAGE_BYTES = 4096;

/**
 * Coalesced runs of non-zero pages from a zero-page map (one byte per 4 KiB page, 1 = all zero;
 * the last page may be partial). An all-zero chunk yields no segments.
 */
export function segmentsFromZeroPages(zeroPages: Uint8Array, chunkLength: number): Segment[] {
  const pages = Math.ceil(chunkLength / SEGMENT_PAGE_BYTES);
  if (zeroPages.length < pages) {
    throw new RangeError(`zero map has ${zeroPages.length} pages, chunk needs ${pages}`);
  }
  const out: Segment[] = [];
  let runStart = -1;
  for (let page = 0; page <= pages; page++) {
    const isData = page < pages && zeroPages[page] === 0;
    if (isData && runStart < 0) runStart = page;
    if (!isData && runStart >= 0) {
      const relOffset = runStart * SEGMENT_PAGE_BYTES;
      const end = Math.min(page * SEGMENT_PAGE_BYTES, chunkLength);
      out.push({ relOffset, length: end - relOffset });
      runStart = -1;
    }
  }
  return out;
}

/** The ranges of a chunk not covered by segments (they are zeros). Segments must be valid. */
export function gapsOf(segments: readonly Segment[], chunkLength: number): Segment[] {
  const out: Segment[] = [];
  let at = 0;
  for (const s of segments) {
    if (s.relOffset > at) out.push({ relOffset: at, length: s.relOffset - at });
    at = s.relOffset + s.length;
  }
  if (at < chunkLength) out.push({ relOffset: at, length: chunkLength - at });
  return out;
}

/**
 * Why a segment table is unacceptable, or undefined if it is fine: segments start on a 4 KiB
 * boundary, are non-empty, whole pages except one ending at the chunk end, ascending and
 * non-overlapping, and carry exactly `dataBytes` bytes.
 */
export function segmentTableProblem(
  segments: readonly Segment[],
  chunkLength: number,
  dataBytes: number,
): string | undefined {
  let at = 0;
  let total = 0;
  for (const [i, s] of segments.entries()) {
    const end = s.relOffset + s.length;
    if (s.length === 0) return `segment ${i} is empty`;
    if (s.relOffset % SEGMENT_PAGE_BYTES !== 0) return `segment ${i} is not 4 KiB aligned`;
    if (s.relOffset < at) return `segment ${i} overlaps or is out of order`;
    if (end > chunkLength) return `segment ${i} ends past the chunk`;
    if (s.length % SEGMENT_PAGE_BYTES !== 0 && end !== chunkLength) {
      return `segment ${i} is not whole pages`;
    }
    at = end;
    total += s.length;
  }
  return total === dataBytes ? undefined : `segments cover ${total} bytes, frame carries ${dataBytes}`;
}

/**
 * Lay the concatenated bytes of `segments` (as a compressed CHUNK carries them once unpacked)
 * out in `target` as the logical chunk of `length` bytes, zeros in the gaps. False if `raw` is
 * not exactly the segments' size (corrupt in transit: the caller asks for the chunk again).
 */
export function spreadSegments(
  segments: readonly Segment[],
  raw: Uint8Array,
  target: Uint8Array,
  length: number,
): boolean {
  if (raw.length !== segments.reduce((n, s) => n + s.length, 0) || target.length < length) return false;
  let at = 0;
  for (const s of segments) {
    target.set(raw.subarray(at, at + s.length), s.relOffset);
    at += s.length;
  }
  for (const g of gapsOf(segments, length)) target.fill(0, g.relOffset, g.relOffset + g.length);
  return true;
}

/** The segments' bytes of a logical chunk, back to back (what a compressed CHUNK compresses). */
export function gatherSegments(segments: readonly Segment[], logical: Uint8Array): Uint8Array {
  const out = new Uint8Array(segments.reduce((n, s) => n + s.length, 0));
  let at = 0;
  for (const s of segments) {
    out.set(logical.subarray(s.relOffset, s.relOffset + s.length), at);
    at += s.length;
  }
  return out;
}
