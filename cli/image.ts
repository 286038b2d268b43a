import { open } from "node:fs/promises";

/**
 * Marsaglia's xorshift128 on four 32-bit words (period 2^128 - 1): fast, seeded, and with no
 * repeat an LZ4 or zstd window could find, so its bytes do not compress. The seed is spread
 * over the state by splitmix32 steps.
 */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  const mix = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let x = mix();
  let y = mix();
  let z = mix();
  let w = mix() || 1;
  return () => {
    const t = x ^ (x << 11);
    x = y;
    y = z;
    z = w;
    w = (w ^ (w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return w;
  };
}

export function fillRandom(buf: Buffer, next: () => number): void {
  const words = Math.floor(buf.length / 4);
  const view = new Uint32Array(buf.buffer, buf.byteOffset, words);
  for (let i = 0; i < words; i++) view[i] = next();
  for (let i = words * 4; i < buf.length; i++) buf[i] = next() & 0xff;
}

const TEXT = Buffer.from(
  "Nov 26 12:00:01 vm kernel: [    0.000000] Linux version 6.1.0 (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC\n" +
    "Nov 26 12:00:02 vm systemd[1]: Started Journal Service.\n/usr/lib/x86_64-linux-gnu/libc.so.6 ELF 64-bit LSB\n",
);

export interface ImageSpec {
  sizeBytes: number;
  /** Fraction of the image left as holes (zero). Default 0.9. */
  zeroFraction?: number;
  /** Fraction of the data extents that are random (the rest text-like). Default 0.5. */
  randomFraction?: number;
  seed?: number;
}

/**
 * Writes a sparse VM-like image: mostly holes, with data extents (text-like or random) of 64 KiB
 * to 4 MiB at unaligned offsets. Returns the number of data bytes written.
 */
export async function generateImage(path: string, spec: ImageSpec): Promise<number> {
  const next = prng(spec.seed ?? 1);
  const zeroFraction = spec.zeroFraction ?? 0.9;
  const randomFraction = spec.randomFraction ?? 0.5;
  const fh = await open(path, "w");
  let written = 0;
  try {
    await fh.truncate(spec.sizeBytes);
    const target = Math.floor(spec.sizeBytes * (1 - zeroFraction));
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    while (written < target) {
      const len = Math.min(65536 + (next() % (4 * 1024 * 1024 - 65536)), target - written, spec.sizeBytes);
      const offset = next() % Math.max(1, spec.sizeBytes - len);
      const data = buf.subarray(0, len);
      if (next() / 2 ** 32 < randomFraction) fillRandom(data, next);
      else for (let i = 0; i < len; i += TEXT.length) TEXT.copy(data, i, 0, Math.min(TEXT.length, len - i));
      await fh.write(data, 0, len, offset);
      written += len;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return written;
}

/** A file of incompressible random bytes (not sparse). */
export async function generateRandomFile(path: string, sizeBytes: number, seed = 7): Promise<void> {
  const next = prng(seed);
  const fh = await open(path, "w");
  try {
    const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
    for (let off = 0; off < sizeBytes; off += buf.length) {
      const n = Math.min(buf.length, sizeBytes - off);
      fillRandom(buf.subarray(0, n), next);
      await fh.write(buf, 0, n, off);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}
