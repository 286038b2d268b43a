import { open } from "node:fs/promises";

/** xorshift128+: fast, seeded, good enough to make incompressible test data. */
export function prng(seed: number): () => number {
  let s0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
  let s1 = (seed * 2654435761) >>> 0 || 2;
  return () => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    s1 = x >>> 0;
    return (s0 + s1) >>> 0;
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
