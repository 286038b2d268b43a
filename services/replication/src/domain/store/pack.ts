import { pageTreePages } from "#native/page-tree.js";
import { PAGE } from "./manifest.js";

// A pack holds many chunks in one file, so a sync costs one file, one write stream and one fsync
// instead of one of each per chunk. Layout:
//   "DWPACK01" | record* | index | tail
//   record: u32 magic "DWR1" | u8 kind (0 whole, 1 delta) | u8 cvs | 2 reserved | 32 BLAKE3 |
//           u32 chunk length | u32 n | (delta: 32 base BLAKE3 | n × u32 page | n × u8 zero) | data |
//           (whole with cvs = 1: 32 × pages, each page's BLAKE3 chaining value)
//   index:  per record: 32 BLAKE3 | u32 offset hi | u32 offset lo | u32 record length | u8 kind | (delta: 32 base)
//   tail:   u32 count | u32 offset hi | u32 offset lo | u32 index length | u32 CRC32C of the index | "DWPK"
// A whole record's data is the chunk. A delta's base is always a whole chunk (a keyframe): a read
// applies at most one delta, and the delta lists every page that differs from the keyframe.
// A whole chunk of a power of two of at least two 4 KiB pages (native pageTreePages) may carry
// its pages' chaining values: a new version built from it is then checked against its BLAKE3
// from those values and the changed pages alone, without reading or hashing the keyframe's data.
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
export function encodeRecord(
  hash: string,
  kind: RecordKind,
  chunk: { len: number; data: Uint8Array; delta?: Omit<PageDelta, "len" | "data">; cvs?: Uint8Array },
): Buffer {
  const n = chunk.delta?.pages.length ?? 0;
  const extra = kind === "delta" ? 32 + 5 * n : 0;
  const cvs =
    kind === "whole" && chunk.cvs !== undefined && chunk.cvs.length === cvBytes(chunk.len) && chunk.cvs.length > 0
      ? chunk.cvs
      : undefined;
  const out = Buffer.allocUnsafe(RECORD_HEAD + extra + chunk.data.length + (cvs?.length ?? 0));
  out.writeUInt32BE(RECORD_MAGIC, 0);
  out.writeUInt32BE(kind === "delta" ? 0x01000000 : cvs ? 0x00010000 : 0, 4);
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
  if (cvs) out.set(cvs, RECORD_HEAD + chunk.data.length);
  return out;
}

/** Bytes of the page chaining values a whole chunk of `len` bytes can carry (0: none). */
export function cvBytes(len: number): number {
  return 32 * (pageTreePages(len) ?? 0);
}

/** Where a whole record's chaining values start, if its length says it has them (index entries carry no flag). */
export function cvsAt(recordLength: number, len: number): number | undefined {
  const n = cvBytes(len);
  return n > 0 && recordLength === RECORD_HEAD + len + n ? RECORD_HEAD + len : undefined;
}

/** The longest whole record of a chunk of `len` bytes. */
export const maxWholeRecord = (len: number): number => RECORD_HEAD + len + cvBytes(len);

/**
 * A record read back: the chunk itself (with its page chaining values, when stored), or a delta
 * against its keyframe.
 */
export type DecodedRecord =
  | { kind: "whole"; hash: string; data: Buffer; cvs?: Buffer }
  | { kind: "delta"; hash: string; delta: PageDelta };

export function decodeRecord(buf: Buffer): DecodedRecord {
  if (buf.length < RECORD_HEAD || buf.readUInt32BE(0) !== RECORD_MAGIC) throw new RangeError("not a pack record");
  const hash = hex(buf.subarray(8, 40));
  const len = buf.readUInt32BE(40);
  const n = buf.readUInt32BE(44);
  if (buf[4] === 0) {
    const cvs = buf[5] === 1 ? cvBytes(len) : 0;
    if (buf.length !== RECORD_HEAD + len + cvs || (buf[5] === 1 && cvs === 0))
      throw new RangeError(`whole record of ${buf.length} bytes for a chunk of ${len}`);
    const data = buf.subarray(RECORD_HEAD, RECORD_HEAD + len);
    return cvs > 0
      ? { kind: "whole", hash, data, cvs: buf.subarray(RECORD_HEAD + len) }
      : { kind: "whole", hash, data };
  }
  const dataAt = RECORD_HEAD + 32 + 5 * n;
  if (buf.length < dataAt) throw new RangeError("truncated delta record");
  const pages = new Array<number>(n);
  const zero = new Array<boolean>(n);
  for (let i = 0; i < n; i++) {
    pages[i] = buf.readUInt32BE(RECORD_HEAD + 32 + 4 * i);
    zero[i] = buf[RECORD_HEAD + 32 + 4 * n + i] === 1;
  }
  return {
    kind: "delta",
    hash,
    delta: { base: hex(buf.subarray(RECORD_HEAD, RECORD_HEAD + 32)), len, pages, zero, data: buf.subarray(dataAt) },
  };
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
  const t = {
    count: buf.readUInt32BE(0),
    indexOffset: buf.readUInt32BE(4) * 0x100000000 + buf.readUInt32BE(8),
    indexLength: buf.readUInt32BE(12),
    crc32c: buf.readUInt32BE(16),
  };
  if (t.indexOffset < PACK_MAGIC.length || t.indexOffset + t.indexLength + TAIL_BYTES !== fileSize)
    throw new RangeError("pack tail does not fit the file");
  return t;
}

/**
 * The chunk a delta describes: the keyframe cut or zero-extended to `len`, with the listed pages
 * replaced (zero pages by zeros). `into` (at least `len` bytes) is reused when given. Undefined
 * when the delta does not fit: a page outside the chunk, or data that does not add up.
 */
export function applyPages(
  base: Uint8Array | undefined,
  d: Omit<PageDelta, "base">,
  into?: Buffer,
): Buffer | undefined {
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
export function mergePages(
  chunk: Uint8Array,
  older: number[],
  changed: number[],
  isZeroPage: (j: number) => boolean,
): Omit<PageDelta, "base" | "len"> {
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

/** Pages of a chunk and their bytes: `zero` pages carry none, the others' bytes follow in order in `data`. */
export type PageSet = Omit<PageDelta, "base" | "len">;

/**
 * Each listed page of a chunk of `len` bytes with its bytes (null: a zero page), or undefined when
 * the set does not fit the chunk (pages out of order or outside it, data that does not add up).
 */
export function pagesOf(len: number, s: PageSet): PageBytes[] | undefined {
  const out: PageBytes[] = [];
  const data = Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength);
  let off = 0;
  let prev = -1;
  for (const [i, j] of s.pages.entries()) {
    const size = Math.min(PAGE, len - j * PAGE);
    if (!Number.isInteger(j) || j <= prev || size <= 0) return undefined;
    prev = j;
    if (s.zero[i]) out.push({ j, bytes: null });
    else {
      if (off + size > data.length) return undefined;
      out.push({ j, bytes: data.subarray(off, off + size) });
      off += size;
    }
  }
  return off === data.length ? out : undefined;
}

/** One page of a page set with its bytes (null: a zero page). */
export type PageBytes = { j: number; bytes: Buffer | null };

/**
 * The pages of the delta against a keyframe of a chunk that is its base (`older`, the base's own
 * delta against that keyframe) with `newer` pages written over it: the union of both in page
 * order, the newer page winning. The same as mergePages over the rebuilt chunk, without
 * rebuilding it. Undefined when either set does not fit the chunk.
 */
export function stackPages(len: number, older: PageSet, newer: PageSet): PageBytes[] | undefined {
  const a = pagesOf(len, older);
  const b = pagesOf(len, newer);
  if (!a || !b) return undefined;
  const byPage = new Map<number, Buffer | null>();
  for (const p of a) byPage.set(p.j, p.bytes);
  for (const p of b) byPage.set(p.j, p.bytes);
  return [...byPage.keys()].sort((x, y) => x - y).map((j) => ({ j, bytes: byPage.get(j) ?? null }));
}

/** The page set (as a delta stores it) of pages in page order. */
export function pageSetOf(pages: PageBytes[]): PageSet {
  return {
    pages: pages.map((p) => p.j),
    zero: pages.map((p) => p.bytes === null),
    data: Buffer.concat(pages.flatMap((p) => p.bytes ?? [])),
  };
}
