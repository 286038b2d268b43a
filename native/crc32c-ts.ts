// CRC32C (Castagnoli, reflected) in plain TypeScript: the fallback the mover runs with
// DWCP_NATIVE=off, so it is tuned: slicing-by-16 over aligned 32-bit words (one Int32Array of
// 16 tables), bytes only for the unaligned head and the tail. Matches native/src/crc32c_*.cc.
const POLY = 0x82f63b78;
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

function makeTables(): Int32Array {
  const t = new Int32Array(16 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? (c >>> 1) ^ POLY : c >>> 1;
    t[i] = c;
  }
  for (let i = 256; i < 16 * 256; i++) {
    const prev = t[i - 256]!;
    t[i] = (prev >>> 8) ^ t[prev & 0xff]!;
  }
  return t;
}

const T = makeTables();

function bytewise(crc: number, buf: Uint8Array, from: number, to: number): number {
  let c = crc;
  for (let i = from; i < to; i++) c = T[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c;
}

// Sixteen bytes (four words) per step; table k maps a byte that is k bytes from the end.
function words16(crc: number, w: Int32Array, count: number): number {
  let c = crc;
  for (let i = 0; i + 4 <= count; i += 4) {
    const a = w[i]! ^ c,
      b = w[i + 1]!,
      d = w[i + 2]!,
      e = w[i + 3]!;
    c =
      T[3840 + (a & 0xff)]! ^
      T[3584 + ((a >>> 8) & 0xff)]! ^
      T[3328 + ((a >>> 16) & 0xff)]! ^
      T[3072 + (a >>> 24)]! ^
      T[2816 + (b & 0xff)]! ^
      T[2560 + ((b >>> 8) & 0xff)]! ^
      T[2304 + ((b >>> 16) & 0xff)]! ^
      T[2048 + (b >>> 24)]! ^
      T[1792 + (d & 0xff)]! ^
      T[1536 + ((d >>> 8) & 0xff)]! ^
      T[1280 + ((d >>> 16) & 0xff)]! ^
      T[1024 + (d >>> 24)]! ^
      T[768 + (e & 0xff)]! ^
      T[512 + ((e >>> 8) & 0xff)]! ^
      T[256 + ((e >>> 16) & 0xff)]! ^
      T[e >>> 24]!;
  }
  return c;
}

/** Raw CRC32C state update (no pre/post inversion). */
export function crc32cRaw(crc: number, buf: Uint8Array): number {
  const n = buf.length;
  if (!LITTLE_ENDIAN || n < 64) return bytewise(crc, buf, 0, n);
  const head = (4 - (buf.byteOffset & 3)) & 3;
  let c = bytewise(crc, buf, 0, head);
  const body = (n - head) & ~15;
  c = words16(c, new Int32Array(buf.buffer, buf.byteOffset + head, body >>> 2), body >>> 2);
  return bytewise(c, buf, head + body, n);
}

/** CRC32C of buf, continuing from seed (the CRC of everything before buf). */
export function crc32c(buf: Uint8Array, seed = 0): number {
  return ~crc32cRaw(~seed, buf) >>> 0;
}

/** a * b mod P, bit-reflected (bit 31 = x^0), as zlib's multmodp. */
function multmodp(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  let bb = b;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= bb;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    bb = (bb & 1) !== 0 ? (bb >>> 1) ^ POLY : bb >>> 1;
  }
  return p >>> 0;
}

// X8[k] = x^(8 * 2^k) mod P: shifting by 2^k bytes. 53 entries cover every safe-integer length.
const X8 = (() => {
  const t: number[] = [];
  let p = 1 << 23; // x^8
  for (let k = 0; k < 53; k++) {
    t.push(p >>> 0);
    p = multmodp(p, p);
  }
  return t;
})();

/** x^(8 * len) mod P. */
function xpow8(len: number): number {
  let p = 0x80000000;
  let n = len;
  for (let k = 0; n > 0; k++, n = Math.floor(n / 2)) {
    if (n % 2 === 1) p = multmodp(X8[k]!, p);
  }
  return p;
}

/** CRC32C of A||B from crc(A), crc(B) and B's length. */
export function crc32cCombine(crcA: number, crcB: number, lenB: number): number {
  return (multmodp(xpow8(lenB), crcA) ^ crcB) >>> 0;
}

/** CRC32C of len zero bytes continuing from seed, without touching len bytes. */
export function crc32cZeros(len: number, seed = 0): number {
  return ~multmodp(xpow8(len), ~seed >>> 0) >>> 0;
}
