import { PAGE } from "./manifest.js";

// A pack holds many chunks in one file, so a sync costs one file, one write stream and one fsync
// instead of one of each per chunk. Layout:
//   "DWPACK01" | record* | index | tail
//   record: u32 magic "DWR1" | u8 kind (0 whole, 1 delta) | 3 reserved | 32 BLAKE3 | u32 chunk length |
//           u32 n | (delta: 32 base BLAKE3 | n × u32 page | n × u8 zero) | data
//   index:  per record: 32 BLAKE3 | u32 offset hi | u32 offset lo | u32 record length | u8 kind | (delta: 32 base)
//   tail:   u32 count | u32 offset hi | u32 offset lo | u32 index length | u32 CRC32C of the index | "DWPK"
// A whole record's data is the chunk. A delta's base is always a whole chunk (a keyframe): a read
// applies at most one delta, and the delta lists every page that differs from the keyframe.
// Integers are big-endian.

export const PACK_MAGIC = Buffer.from("DWPACK01");
const RECORD_MAGIC = 0x44575231; // "DWR1"
const TAIL_MAGIC = 0x4457504b; // "DWPK"
export const RECORD_HEAD = 48;
export const TAIL_BYTES = 24;

export type RecordKind = "whole" | "delta";

/** Pages that differ from a keyframe chunk: `zero` pages carry no data, the others follow in order. */
export interface PageDelta {
  base: string;
  len: number;
  pages: number[];
  zero: boolean[];
  data: Uint8Array;
}

export interface IndexEntry {
  hash: string;
  offset: number;
  length: number;
  kind: RecordKind;
  /** The keyframe a delta is applied to. */
  base?: string;
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

/** One record, ready to append. */
export function encodeRecord(hash: string, kind: RecordKind, chunk: { len: number; data: Uint8Array; delta?: Omit<PageDelta, "len" | "data"> }): Buffer {
  const n = chunk.delta?.pages.length ?? 0;
  const extra = kind === "delta" ? 32 + 5 * n : 0;
  const out = Buffer.allocUnsafe(RECORD_HEAD + extra + chunk.data.length);
  out.writeUInt32BE(RECORD_MAGIC, 0);
  out.writeUInt32BE(kind === "delta" ? 0x01000000 : 0, 4);
  out.write(hash, 8, 32, "hex");
  out.writeUInt32BE(chunk.len, 40);
  out.writeUInt32BE(n, 44);
  if (kind === "delta" && chunk.delta) {
    out.write(chunk.delta.base, RECORD_HEAD, 32, "hex");
    let p = RECORD_HEAD + 32;
    for (const j of chunk.delta.pages) p = out.writeUInt32BE(j, p);
    for (const z of chunk.delta.zero) p = out.writeUInt8(z ? 1 : 0, p);
  }
  out.set(chunk.data, RECORD_HEAD + extra);
  return out;
}

/** A record read back: the chunk itself, or a delta against its keyframe. */
export type DecodedRecord = { kind: "whole"; hash: string; data: Buffer } | { kind: "delta"; hash: string; delta: PageDelta };

export function decodeRecord(buf: Buffer): DecodedRecord {
  if (buf.length < RECORD_HEAD || buf.readUInt32BE(0) !== RECORD_MAGIC) throw new RangeError("not a pack record");
  const hash = hex(buf.subarray(8, 40));
  const len = buf.readUInt32BE(40);
  const n = buf.readUInt32BE(44);
  if (buf[4] === 0) {
    if (buf.length !== RECORD_HEAD + len) throw new RangeError(`whole record of ${buf.length} bytes for a chunk of ${len}`);
    return { kind: "whole", hash, data: buf.subarray(RECORD_HEAD) };
  }
  const dataAt = RECORD_HEAD + 32 + 5 * n;
  if (buf.length < dataAt) throw new RangeError("truncated delta record");
  const pages = new Array<number>(n);
  const zero = new Array<boolean>(n);
  for (let i = 0; i < n; i++) {
    pages[i] = buf.readUInt32BE(RECORD_HEAD + 32 + 4 * i);
    zero[i] = buf[RECORD_HEAD + 32 + 4 * n + i] === 1;
  }
  return { kind: "delta", hash, delta: { base: hex(buf.subarray(RECORD_HEAD, RECORD_HEAD + 32)), len, pages, zero, data: buf.subarray(dataAt) } };
}

export function encodeIndex(entries: IndexEntry[]): Buffer {
  const size = entries.reduce((s, e) => s + 45 + (e.kind === "delta" ? 32 : 0), 0);
  const out = Buffer.allocUnsafe(size);
  let p = 0;
  for (const e of entries) {
    p += out.write(e.hash, p, 32, "hex");
    p = out.writeUInt32BE(Math.floor(e.offset / 0x100000000), p);
    p = out.writeUInt32BE(e.offset >>> 0, p);
    p = out.writeUInt32BE(e.length, p);
    p = out.writeUInt8(e.kind === "delta" ? 1 : 0, p);
    if (e.kind === "delta") p += out.write(e.base ?? "", p, 32, "hex");
  }
  return out;
}

export function decodeIndex(buf: Buffer, count: number): IndexEntry[] {
  const out: IndexEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 45 > buf.length) throw new RangeError("truncated pack index");
    const hash = hex(buf.subarray(p, p + 32));
    const offset = buf.readUInt32BE(p + 32) * 0x100000000 + buf.readUInt32BE(p + 36);
    const length = buf.readUInt32BE(p + 40);
    const delta = buf[p + 44] === 1;
    p += 45;
    if (delta) {
      if (p + 32 > buf.length) throw new RangeError("truncated pack index");
      out.push({ hash, offset, length, kind: "delta", base: hex(buf.subarray(p, p + 32)) });
      p += 32;
    } else out.push({ hash, offset, length, kind: "whole" });
  }
  if (p !== buf.length) throw new RangeError("pack index longer than its count");
  return out;
}

export interface PackTail {
  count: number;
  indexOffset: number;
  indexLength: number;
  crc32c: number;
}

export function encodeTail(t: PackTail): Buffer {
  const out = Buffer.allocUnsafe(TAIL_BYTES);
  out.writeUInt32BE(t.count, 0);
  out.writeUInt32BE(Math.floor(t.indexOffset / 0x100000000), 4);
  out.writeUInt32BE(t.indexOffset >>> 0, 8);
  out.writeUInt32BE(t.indexLength, 12);
  out.writeUInt32BE(t.crc32c, 16);
  out.writeUInt32BE(TAIL_MAGIC, 20);
  return out;
}

export function decodeTail(buf: Buffer, fileSize: number): PackTail {
  if (buf.length !== TAIL_BYTES || buf.readUInt32BE(20) !== TAIL_MAGIC) throw new RangeError("pack has no tail");
  const t = { count: buf.readUInt32BE(0), indexOffset: buf.readUInt32BE(4) * 0x100000000 + buf.readUInt32BE(8), indexLength: buf.readUInt32BE(12), crc32c: buf.readUInt32BE(16) };
  if (t.indexOffset < PACK_MAGIC.length || t.indexOffset + t.indexLength + TAIL_BYTES !== fileSize) throw new RangeError("pack tail does not fit the file");
  return t;
}

/**
 * The chunk a delta describes: the keyframe cut or zero-extended to `len`, with the listed pages
 * replaced (zero pages by zeros). `into` (at least `len` bytes) is reused when given. Undefined
 * when the delta does not fit: a page outside the chunk, or data that does not add up.
 */
export function applyPages(base: Uint8Array | undefined, d: Omit<PageDelta, "base">, into?: Buffer): Buffer | undefined {
  const out = into ? into.subarray(0, d.len) : Buffer.allocUnsafe(d.len);
  const keep = base ? Math.min(base.length, d.len) : 0;
  if (keep > 0 && base) out.set(base.subarray(0, keep));
  if (keep < d.len) out.fill(0, keep);
  let off = 0;
  let prev = -1;
  for (let i = 0; i < d.pages.length; i++) {
    const j = d.pages[i]!;
    const start = j * PAGE;
    const end = Math.min(start + PAGE, d.len);
    if (j <= prev || start >= end) return undefined;
    prev = j;
    if (d.zero[i]) out.fill(0, start, end);
    else {
      if (off + end - start > d.data.length) return undefined;
      out.set(d.data.subarray(off, off + end - start), start);
      off += end - start;
    }
  }
  return off === d.data.length ? out : undefined;
}

/**
 * The delta of a new version against the keyframe of its base: the pages the base's own delta
 * listed (against that keyframe) merged with the pages that changed now, the newer winning.
 * `chunk` is the new version, already rebuilt and verified: every page's bytes come from it.
 */
export function mergePages(chunk: Uint8Array, older: number[], changed: number[], isZeroPage: (j: number) => boolean): Omit<PageDelta, "base" | "len"> {
  const set = new Set(older);
  for (const j of changed) set.add(j);
  const pages = [...set].sort((a, b) => a - b);
  const zero = pages.map(isZeroPage);
  let bytes = 0;
  for (const [i, j] of pages.entries()) if (!zero[i]) bytes += Math.min(PAGE, chunk.length - j * PAGE);
  const data = Buffer.allocUnsafe(bytes);
  let off = 0;
  for (const [i, j] of pages.entries()) {
    if (zero[i]) continue;
    const piece = chunk.subarray(j * PAGE, Math.min((j + 1) * PAGE, chunk.length));
    data.set(piece, off);
    off += piece.length;
  }
  return { pages, zero, data };
}

/**
 * Whether `pages` against `key` rebuild `chunk`: every page not listed must equal the keyframe's
 * (or be zero past its end). Compares ranges in place instead of rebuilding the chunk.
 */
export function deltaRebuilds(key: Buffer, chunk: Buffer, pages: number[], isZero: (b: Buffer) => boolean): boolean {
  let from = 0;
  const same = (start: number, end: number): boolean => {
    if (start >= end) return true;
    const common = Math.min(end, key.length);
    if (start < common && key.compare(chunk, start, common, start, common) !== 0) return false;
    return common >= end || isZero(chunk.subarray(Math.max(start, common), end));
  };
  for (const j of pages) {
    if (!same(from, Math.min(j * PAGE, chunk.length))) return false;
    from = Math.min((j + 1) * PAGE, chunk.length);
  }
  return same(from, chunk.length);
}
