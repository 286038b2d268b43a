// Pure-TypeScript kernels: what native/index.ts runs when the native module is missing or
// DWCP_NATIVE=off. Every function returns exactly what the native paths return (checked by
// kernels.unit.spec.ts).
import { blake3, blake3PageCv, blake3Pages, blake3RootFromCvs } from "./blake3-ts.js";
import { crc32c, crc32cCombine, crc32cZeros } from "./crc32c-ts.js";
import { fingerprints } from "./fingerprint-ts.js";
import { PAGE_SIZE } from "./page-tree.js";

export { blake3, blake3PageCv, blake3Pages, blake3RootFromCvs, crc32c, crc32cCombine, crc32cZeros, fingerprints };
export { PAGE_SIZE };

export const XOR_DELTA_MAGIC = 0x314c4458; // "XDL1"
export const XOR_DELTA_MIN_ZERO_RUN = 16;

function rangeIsZero(buf: Uint8Array, from: number, to: number): boolean {
  let i = from;
  const head = Math.min(to, from + ((4 - ((buf.byteOffset + from) & 3)) & 3));
  for (; i < head; i++) if (buf[i] !== 0) return false;
  const words = (to - i) >>> 2;
  if (words > 0) {
    const w = new Int32Array(buf.buffer, buf.byteOffset + i, words);
    for (let j = 0; j < words; j += 64) {
      let acc = 0;
      const end = Math.min(words, j + 64);
      for (let k = j; k < end; k++) acc |= w[k]!;
      if (acc !== 0) return false;
    }
    i += 4 * words;
  }
  for (; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

/** OR of every byte, no early exit (the bench's read probe). */
export function orReduce(buf: Uint8Array): number {
  const head = Math.min(buf.length, (4 - (buf.byteOffset & 3)) & 3);
  const words = (buf.length - head) >>> 2;
  let acc = 0;
  for (let i = 0; i < head; i++) acc |= buf[i]!;
  const w = new Int32Array(buf.buffer, buf.byteOffset + head, words);
  for (let i = 0; i < words; i++) acc |= w[i]!;
  for (let i = head + 4 * words; i < buf.length; i++) acc |= buf[i]!;
  return acc;
}

export function isZero(buf: Uint8Array): boolean {
  return rangeIsZero(buf, 0, buf.length);
}

/** 1 byte per 4 KiB page (the last may be partial): 1 = all zero. */
export function zeroPages(buf: Uint8Array): Uint8Array {
  const flags = new Uint8Array(Math.ceil(buf.length / PAGE_SIZE));
  for (let p = 0; p < flags.length; p++) {
    flags[p] = rangeIsZero(buf, p * PAGE_SIZE, Math.min(buf.length, (p + 1) * PAGE_SIZE)) ? 1 : 0;
  }
  return flags;
}

/** Literal end: start of the first zero run of >= 16 bytes (or of one reaching the end). */
function literalEnd(a: Uint8Array, b: Uint8Array, start: number): number {
  let run = 0;
  for (let i = start; i < a.length; i++) {
    if (a[i] === b[i]) {
      if (++run === XOR_DELTA_MIN_ZERO_RUN) return i + 1 - run;
    } else {
      run = 0;
    }
  }
  return a.length - run;
}

/** Upper bound of an encoded delta's size for buffers of n bytes. */
export function xorDeltaBound(n: number): number {
  return 8 + n + 8 * (Math.floor(n / (XOR_DELTA_MIN_ZERO_RUN + 1)) + 2);
}

/** XOR delta of two equal-length buffers (format in native/README.md). */
export function xorDeltaEncode(oldBuf: Uint8Array, newBuf: Uint8Array): Buffer {
  const n = oldBuf.length;
  const out = Buffer.allocUnsafe(xorDeltaBound(n));
  out.writeUInt32LE(XOR_DELTA_MAGIC, 0);
  out.writeUInt32LE(n, 4);
  let w = 8;
  let pos = 0;
  while (pos < n) {
    let s = pos;
    while (s < n && oldBuf[s] === newBuf[s]) s++;
    const e = s === n ? n : literalEnd(oldBuf, newBuf, s);
    out.writeUInt32LE(s - pos, w);
    out.writeUInt32LE(e - s, w + 4);
    w += 8;
    for (let i = s; i < e; i++) out[w++] = oldBuf[i]! ^ newBuf[i]!;
    pos = e;
  }
  return Buffer.from(out.subarray(0, w));
}

/** Checks the record structure without touching data, so a bad delta modifies nothing. */
function deltaValid(n: number, d: Buffer): boolean {
  if (d.length < 8 || d.readUInt32LE(0) !== XOR_DELTA_MAGIC || d.readUInt32LE(4) !== n) return false;
  let pos = 0;
  for (let r = 8; r < d.length; ) {
    if (d.length - r < 8) return false;
    const zeroRun = d.readUInt32LE(r);
    const len = d.readUInt32LE(r + 4);
    r += 8;
    if (zeroRun > n - pos) return false;
    pos += zeroRun;
    if (len > n - pos || len > d.length - r) return false;
    pos += len;
    r += len;
  }
  return pos === n;
}

/**
 * Applies a delta to old, into out (a new buffer by default; may be old itself); undefined if
 * the delta is malformed or made for another length (out is then untouched).
 */
export function xorDeltaDecode(oldBuf: Uint8Array, delta: Uint8Array, into?: Uint8Array): Uint8Array | undefined {
  const n = oldBuf.length;
  const d = Buffer.from(delta.buffer, delta.byteOffset, delta.byteLength);
  if (!deltaValid(n, d)) return undefined;
  const out = into ?? Buffer.allocUnsafe(n);
  if (out !== oldBuf) out.set(oldBuf);
  let pos = 0;
  for (let r = 8; r < d.length; ) {
    pos += d.readUInt32LE(r);
    const len = d.readUInt32LE(r + 4);
    r += 8;
    for (let i = 0; i < len; i++) out[pos + i]! ^= d[r + i]!;
    pos += len;
    r += len;
  }
  return out;
}
