// Page fingerprints in plain TypeScript, bit-identical to native/src/fingerprint_*.cc (the
// definition is in native/src/fingerprint.h). 64-bit lanes are kept as pairs of u32 halves in
// the hot loop; the per-page finish uses BigInt.
//
// A WEAK fingerprint: acceptable only because incremental sync verifies each rebuilt chunk
// with the strong hash (BLAKE3).
const PAGE = 4096;
const M64 = (1n << 64n) - 1n;
const P = [0x9e3779b185ebca87n, 0xc2b2ae3d27d4eb4fn, 0x165667b19e3779f9n, 0x85ebca77c2b2ae63n] as const;
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/** splitmix64 key material: 8 stripes x 4 lanes, as [lo, hi] u32 pairs. */
const SECRET = (() => {
  const out = new Uint32Array(64);
  let state = 0x243f6a8885a308d3n;
  for (let i = 0; i < 32; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & M64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
    z ^= z >> 31n;
    out[2 * i] = Number(z & 0xffffffffn);
    out[2 * i + 1] = Number(z >> 32n);
  }
  return out;
})();

/** High 32 bits of the 64-bit product of two u32 (exact: every intermediate is < 2^53). */
function mulHi(a: number, b: number): number {
  const t = (a >>> 16) * b + Math.floor(((a & 0xffff) * b) / 65536);
  return Math.floor(t / 65536);
}

/** acc[i] += lo32(d ^ k) * hi32(d ^ k) + e, with acc as [lo, hi] halves at acc[2i]. */
function lane(
  acc: Float64Array,
  i: number,
  dl: number,
  dh: number,
  kl: number,
  kh: number,
  el: number,
  eh: number,
): void {
  const x = (dl ^ kl) >>> 0;
  const y = (dh ^ kh) >>> 0;
  const lo = acc[2 * i]! + (Math.imul(x, y) >>> 0) + el;
  acc[2 * i] = lo >>> 0;
  acc[2 * i + 1] = (acc[2 * i + 1]! + mulHi(x, y) + eh + Math.floor(lo / 4294967296)) >>> 0;
}

function finish(acc: Float64Array, len: number): bigint {
  let h = (BigInt(len) * P[0]) & M64;
  for (let i = 0; i < 4; i++) {
    h ^= (BigInt(acc[2 * i + 1]!) << 32n) | BigInt(acc[2 * i]!);
    h = (((h << 27n) | (h >> 37n)) * P[1]) & M64;
  }
  h ^= h >> 33n;
  h = (h * P[1]) & M64;
  h ^= h >> 29n;
  h = (h * P[2]) & M64;
  return h ^ (h >> 32n);
}

const words = new Uint32Array(PAGE / 4);
const acc = new Float64Array(8);

function page(bytes: Uint8Array): bigint {
  words.fill(0);
  if (LITTLE_ENDIAN) new Uint8Array(words.buffer).set(bytes);
  else for (let i = 0; i < bytes.length; i++) words[i >>> 2]! |= bytes[i]! << (8 * (i & 3));
  for (let i = 0; i < 4; i++) {
    acc[2 * i] = Number(P[i]! & 0xffffffffn);
    acc[2 * i + 1] = Number(P[i]! >> 32n);
  }
  const stripes = Math.ceil(bytes.length / 32);
  for (let s = 0; s < stripes; s++) {
    const w = 8 * s;
    const k = 8 * (s & 7);
    const d0l = words[w]!,
      d0h = words[w + 1]!,
      d1l = words[w + 2]!,
      d1h = words[w + 3]!;
    const d2l = words[w + 4]!,
      d2h = words[w + 5]!,
      d3l = words[w + 6]!,
      d3h = words[w + 7]!;
    lane(acc, 0, d0l, d0h, SECRET[k]!, SECRET[k + 1]!, d1l, d1h);
    lane(acc, 1, d1l, d1h, SECRET[k + 2]!, SECRET[k + 3]!, d0l, d0h);
    lane(acc, 2, d2l, d2h, SECRET[k + 4]!, SECRET[k + 5]!, d3l, d3h);
    lane(acc, 3, d3l, d3h, SECRET[k + 6]!, SECRET[k + 7]!, d2l, d2h);
  }
  return finish(acc, bytes.length);
}

/** One 64-bit fingerprint per 4 KiB page of buf (a partial last page counts). */
export function fingerprints(buf: Uint8Array): BigUint64Array {
  const out = new BigUint64Array(Math.ceil(buf.length / PAGE));
  for (let p = 0; p < out.length; p++) out[p] = page(buf.subarray(p * PAGE, (p + 1) * PAGE));
  return out;
}
