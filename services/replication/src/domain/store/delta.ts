import { PAGE } from "./manifest.js";

// A stored chunk is either its bytes (file <hash>) or a page delta against another stored chunk
// (file <hash>.d): a scattered change then costs its pages at the destination, not a whole chunk.
// Layout: "DWD1" | base BLAKE3 (32) | u32 length | u16 depth | u32 n | n × u32 page | n × u8 zero |
// the non-zero pages in order. Depth bounds how many deltas a read may have to apply.

const MAGIC = Buffer.from("DWD1");
/** Longest chain of deltas before a chunk is stored whole again. */
export const MAX_DELTA_DEPTH = 8;

export interface Delta {
  base: string;
  len: number;
  depth: number;
  pages: number[];
  zero: boolean[];
  /** The non-zero listed pages, concatenated. */
  data: Uint8Array;
}

export function encodeDelta(d: Delta): Buffer {
  const n = d.pages.length;
  const head = Buffer.alloc(4 + 32 + 4 + 2 + 4 + 4 * n + n);
  MAGIC.copy(head, 0);
  Buffer.from(d.base, "hex").copy(head, 4);
  head.writeUInt32BE(d.len, 36);
  head.writeUInt16BE(d.depth, 40);
  head.writeUInt32BE(n, 42);
  d.pages.forEach((p, i) => head.writeUInt32BE(p, 46 + 4 * i));
  d.zero.forEach((z, i) => head.writeUInt8(z ? 1 : 0, 46 + 4 * n + i));
  return Buffer.concat([head, d.data]);
}

export function decodeDelta(buf: Buffer): Delta {
  if (buf.length < 46 || !buf.subarray(0, 4).equals(MAGIC)) throw new RangeError("not a chunk delta");
  const n = buf.readUInt32BE(42);
  const dataAt = 46 + 5 * n;
  if (buf.length < dataAt) throw new RangeError("truncated chunk delta");
  const pages = Array.from({ length: n }, (_, i) => buf.readUInt32BE(46 + 4 * i));
  const zero = Array.from({ length: n }, (_, i) => buf[46 + 4 * n + i] === 1);
  return { base: buf.subarray(4, 36).toString("hex"), len: buf.readUInt32BE(36), depth: buf.readUInt16BE(40), pages, zero, data: buf.subarray(dataAt) };
}

/**
 * The chunk a delta describes: `base` cut or zero-extended to the new length, with the listed
 * pages replaced. Returns undefined when the delta does not fit (a page outside the chunk, too
 * little data): the caller then asks for the whole chunk.
 */
export function applyDelta(base: Uint8Array | undefined, d: Pick<Delta, "len" | "pages" | "zero" | "data">): Buffer | undefined {
  const out = Buffer.alloc(d.len);
  if (base) out.set(base.subarray(0, Math.min(base.length, d.len)));
  let off = 0;
  for (const [i, j] of d.pages.entries()) {
    const start = j * PAGE;
    const end = Math.min(start + PAGE, d.len);
    if (start >= end) return undefined;
    if (d.zero[i]) out.fill(0, start, end);
    else {
      if (off + end - start > d.data.length) return undefined;
      out.set(d.data.subarray(off, off + end - start), start);
      off += end - start;
    }
  }
  return off === d.data.length ? out : undefined;
}
