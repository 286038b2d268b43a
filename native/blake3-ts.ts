// BLAKE3 (unkeyed, 32-byte output) in plain TypeScript: the fallback for native strongHash,
// bit-identical to it. Same bottom-up tree as native/src/blake3_portable.cc.
const BLOCK = 64;
const CHUNK = 1024;
const CHUNK_START = 1;
const CHUNK_END = 2;
const PARENT = 4;
const ROOT = 8;
const IV = Uint32Array.of(
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
);
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/**
 * Compresses one 64-byte block (m[mo..mo+16)) into the chaining value cv[co..co+8), writing the
 * new chaining value to out[oo..oo+8). Straight-line code on locals: V8 keeps them in registers.
 */
function compress(
  cv: Uint32Array,
  co: number,
  m: Uint32Array,
  mo: number,
  counter: number,
  blockLen: number,
  flags: number,
  out: Uint32Array,
  oo: number,
): void {
  let v0 = cv[co]! | 0,
    v1 = cv[co + 1]! | 0,
    v2 = cv[co + 2]! | 0,
    v3 = cv[co + 3]! | 0;
  let v4 = cv[co + 4]! | 0,
    v5 = cv[co + 5]! | 0,
    v6 = cv[co + 6]! | 0,
    v7 = cv[co + 7]! | 0;
  let v8 = 0x6a09e667 | 0,
    v9 = 0xbb67ae85 | 0,
    v10 = 0x3c6ef372 | 0,
    v11 = 0xa54ff53a | 0;
  let v12 = counter | 0,
    v13 = Math.floor(counter / 0x100000000) | 0,
    v14 = blockLen | 0,
    v15 = flags | 0;
  let m0 = m[mo]! | 0,
    m1 = m[mo + 1]! | 0,
    m2 = m[mo + 2]! | 0,
    m3 = m[mo + 3]! | 0;
  let m4 = m[mo + 4]! | 0,
    m5 = m[mo + 5]! | 0,
    m6 = m[mo + 6]! | 0,
    m7 = m[mo + 7]! | 0;
  let m8 = m[mo + 8]! | 0,
    m9 = m[mo + 9]! | 0,
    m10 = m[mo + 10]! | 0,
    m11 = m[mo + 11]! | 0;
  let m12 = m[mo + 12]! | 0,
    m13 = m[mo + 13]! | 0,
    m14 = m[mo + 14]! | 0,
    m15 = m[mo + 15]! | 0;
  for (let r = 0; r < 7; r++) {
    v0 = (v0 + v4 + m0) | 0;
    v12 ^= v0;
    v12 = (v12 >>> 16) | (v12 << 16);
    v8 = (v8 + v12) | 0;
    v4 ^= v8;
    v4 = (v4 >>> 12) | (v4 << 20);
    v0 = (v0 + v4 + m1) | 0;
    v12 ^= v0;
    v12 = (v12 >>> 8) | (v12 << 24);
    v8 = (v8 + v12) | 0;
    v4 ^= v8;
    v4 = (v4 >>> 7) | (v4 << 25);
    v1 = (v1 + v5 + m2) | 0;
    v13 ^= v1;
    v13 = (v13 >>> 16) | (v13 << 16);
    v9 = (v9 + v13) | 0;
    v5 ^= v9;
    v5 = (v5 >>> 12) | (v5 << 20);
    v1 = (v1 + v5 + m3) | 0;
    v13 ^= v1;
    v13 = (v13 >>> 8) | (v13 << 24);
    v9 = (v9 + v13) | 0;
    v5 ^= v9;
    v5 = (v5 >>> 7) | (v5 << 25);
    v2 = (v2 + v6 + m4) | 0;
    v14 ^= v2;
    v14 = (v14 >>> 16) | (v14 << 16);
    v10 = (v10 + v14) | 0;
    v6 ^= v10;
    v6 = (v6 >>> 12) | (v6 << 20);
    v2 = (v2 + v6 + m5) | 0;
    v14 ^= v2;
    v14 = (v14 >>> 8) | (v14 << 24);
    v10 = (v10 + v14) | 0;
    v6 ^= v10;
    v6 = (v6 >>> 7) | (v6 << 25);
    v3 = (v3 + v7 + m6) | 0;
    v15 ^= v3;
    v15 = (v15 >>> 16) | (v15 << 16);
    v11 = (v11 + v15) | 0;
    v7 ^= v11;
    v7 = (v7 >>> 12) | (v7 << 20);
    v3 = (v3 + v7 + m7) | 0;
    v15 ^= v3;
    v15 = (v15 >>> 8) | (v15 << 24);
    v11 = (v11 + v15) | 0;
    v7 ^= v11;
    v7 = (v7 >>> 7) | (v7 << 25);
    v0 = (v0 + v5 + m8) | 0;
    v15 ^= v0;
    v15 = (v15 >>> 16) | (v15 << 16);
    v10 = (v10 + v15) | 0;
    v5 ^= v10;
    v5 = (v5 >>> 12) | (v5 << 20);
    v0 = (v0 + v5 + m9) | 0;
    v15 ^= v0;
    v15 = (v15 >>> 8) | (v15 << 24);
    v10 = (v10 + v15) | 0;
    v5 ^= v10;
    v5 = (v5 >>> 7) | (v5 << 25);
    v1 = (v1 + v6 + m10) | 0;
    v12 ^= v1;
    v12 = (v12 >>> 16) | (v12 << 16);
    v11 = (v11 + v12) | 0;
    v6 ^= v11;
    v6 = (v6 >>> 12) | (v6 << 20);
    v1 = (v1 + v6 + m11) | 0;
    v12 ^= v1;
    v12 = (v12 >>> 8) | (v12 << 24);
    v11 = (v11 + v12) | 0;
    v6 ^= v11;
    v6 = (v6 >>> 7) | (v6 << 25);
    v2 = (v2 + v7 + m12) | 0;
    v13 ^= v2;
    v13 = (v13 >>> 16) | (v13 << 16);
    v8 = (v8 + v13) | 0;
    v7 ^= v8;
    v7 = (v7 >>> 12) | (v7 << 20);
    v2 = (v2 + v7 + m13) | 0;
    v13 ^= v2;
    v13 = (v13 >>> 8) | (v13 << 24);
    v8 = (v8 + v13) | 0;
    v7 ^= v8;
    v7 = (v7 >>> 7) | (v7 << 25);
    v3 = (v3 + v4 + m14) | 0;
    v14 ^= v3;
    v14 = (v14 >>> 16) | (v14 << 16);
    v9 = (v9 + v14) | 0;
    v4 ^= v9;
    v4 = (v4 >>> 12) | (v4 << 20);
    v3 = (v3 + v4 + m15) | 0;
    v14 ^= v3;
    v14 = (v14 >>> 8) | (v14 << 24);
    v9 = (v9 + v14) | 0;
    v4 ^= v9;
    v4 = (v4 >>> 7) | (v4 << 25);
    // Permute the message for the next round: m'[i] = m[PERM[i]].
    const p0 = m2,
      p1 = m6,
      p2 = m3,
      p3 = m10,
      p4 = m7,
      p5 = m0,
      p6 = m4,
      p7 = m13;
    const p8 = m1,
      p9 = m11,
      p10 = m12,
      p11 = m5,
      p12 = m9,
      p13 = m14,
      p14 = m15,
      p15 = m8;
    m0 = p0;
    m1 = p1;
    m2 = p2;
    m3 = p3;
    m4 = p4;
    m5 = p5;
    m6 = p6;
    m7 = p7;
    m8 = p8;
    m9 = p9;
    m10 = p10;
    m11 = p11;
    m12 = p12;
    m13 = p13;
    m14 = p14;
    m15 = p15;
  }
  out[oo] = v0 ^ v8;
  out[oo + 1] = v1 ^ v9;
  out[oo + 2] = v2 ^ v10;
  out[oo + 3] = v3 ^ v11;
  out[oo + 4] = v4 ^ v12;
  out[oo + 5] = v5 ^ v13;
  out[oo + 6] = v6 ^ v14;
  out[oo + 7] = v7 ^ v15;
}

/** Copies bytes into 32-bit little-endian words (dst is zeroed past the input). */
function loadWords(src: Uint8Array, dst: Uint32Array): void {
  dst.fill(0);
  if (LITTLE_ENDIAN) {
    new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength).set(src);
    return;
  }
  for (let i = 0; i < src.length; i++) dst[i >>> 2]! |= src[i]! << (8 * (i & 3));
}

const chunkWords = new Uint32Array(CHUNK / 4);

/** Chaining value of one chunk (0..1024 bytes) into out[oo..oo+8). */
function chunkCv(chunk: Uint8Array, counter: number, endFlags: number, out: Uint32Array, oo: number): void {
  loadWords(chunk, chunkWords);
  const blocks = Math.max(1, Math.ceil(chunk.length / BLOCK));
  out.set(IV, oo);
  for (let b = 0; b < blocks; b++) {
    const len = Math.min(BLOCK, chunk.length - b * BLOCK);
    let flags = b === 0 ? CHUNK_START : 0;
    if (b === blocks - 1) flags |= CHUNK_END | endFlags;
    compress(out, oo, chunkWords, b * 16, counter, len, flags, out, oo);
  }
}

function wordsToBytes(words: Uint32Array, offset: number): Buffer {
  const out = Buffer.allocUnsafe(32);
  for (let i = 0; i < 8; i++) out.writeUInt32LE(words[offset + i]!, 4 * i);
  return out;
}

/** BLAKE3 hash of buf, 32 bytes. */
export function blake3(buf: Uint8Array): Buffer {
  if (buf.length <= CHUNK) {
    const cv = new Uint32Array(8);
    chunkCv(buf, 0, ROOT, cv, 0);
    return wordsToBytes(cv, 0);
  }
  const chunks = Math.ceil(buf.length / CHUNK);
  let cvs = new Uint32Array(8 * chunks);
  for (let c = 0; c < chunks; c++) chunkCv(buf.subarray(c * CHUNK, (c + 1) * CHUNK), c, 0, cvs, 8 * c);
  let count = chunks;
  while (count > 2) {
    const pairs = count >>> 1;
    const next = new Uint32Array(8 * (pairs + (count & 1)));
    for (let i = 0; i < pairs; i++) compress(IV, 0, cvs, 16 * i, 0, BLOCK, PARENT, next, 8 * i);
    if ((count & 1) === 1) next.set(cvs.subarray(16 * pairs, 16 * pairs + 8), 8 * pairs);
    cvs = next;
    count = pairs + (count & 1);
  }
  const root = new Uint32Array(8);
  compress(IV, 0, cvs, 0, 0, BLOCK, PARENT | ROOT, root, 0);
  return wordsToBytes(root, 0);
}

// Page chaining values (see kernels.h in native/src): an input of a power-of-two number (>= 2) of
// 4 KiB pages is a perfectly balanced tree, each page a subtree of four chunks.
const PAGE = 4096;

/** The chaining value of the 4 KiB page at page index `index` into out[oo..oo+8). */
function pageWords(page: Uint8Array, index: number, out: Uint32Array, oo: number): void {
  const leaves = new Uint32Array(32);
  for (let c = 0; c < 4; c++) chunkCv(page.subarray(c * CHUNK, (c + 1) * CHUNK), index * 4 + c, 0, leaves, 8 * c);
  const mid = new Uint32Array(16);
  compress(IV, 0, leaves, 0, 0, BLOCK, PARENT, mid, 0);
  compress(IV, 0, leaves, 16, 0, BLOCK, PARENT, mid, 8);
  compress(IV, 0, mid, 0, 0, BLOCK, PARENT, out, oo);
}

/** The root hash over `count` (a power of two >= 2) chaining values. */
function rootOf(cvs: Uint32Array, count: number): Buffer {
  while (count > 2) {
    const next = new Uint32Array(4 * count);
    for (let i = 0; i < count / 2; i++) compress(IV, 0, cvs, 16 * i, 0, BLOCK, PARENT, next, 8 * i);
    cvs = next;
    count /= 2;
  }
  const root = new Uint32Array(8);
  compress(IV, 0, cvs, 0, 0, BLOCK, PARENT | ROOT, root, 0);
  return wordsToBytes(root, 0);
}

/** BLAKE3 of buf (a power of two >= 2 of 4 KiB pages), writing each page's chaining value into cvs. */
export function blake3Pages(buf: Uint8Array, cvs: Uint8Array): Buffer {
  const pages = buf.length / PAGE;
  const w = new Uint32Array(8 * pages);
  for (let p = 0; p < pages; p++) pageWords(buf.subarray(p * PAGE, (p + 1) * PAGE), p, w, 8 * p);
  const v = new DataView(cvs.buffer, cvs.byteOffset, cvs.byteLength);
  for (let i = 0; i < w.length; i++) v.setUint32(4 * i, w[i]!, true);
  return rootOf(w, pages);
}

/** The chaining value of a 4 KiB page at page index `index`. */
export function blake3PageCv(page: Uint8Array, index: number): Buffer {
  const w = new Uint32Array(8);
  pageWords(page, index, w, 0);
  return wordsToBytes(w, 0);
}

/** The BLAKE3 hash from page chaining values (a power of two >= 2 of them, 32 bytes each). */
export function blake3RootFromCvs(cvs: Uint8Array): Buffer {
  const words = new Uint32Array(cvs.length / 4);
  loadWords(cvs, words);
  return rootOf(words, cvs.length / 32);
}
