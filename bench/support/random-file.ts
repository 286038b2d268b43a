import { randomFillSync } from "node:crypto";
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs";

/**
 * Cryptographically random bytes: no codec finds anything in them. (cli/image.ts's seeded
 * generator repeats within a few MiB, which zstd's window finds.)
 */
export function writeCryptoRandom(path: string, bytes: number): void {
  const fd = openSync(path, "w");
  try {
    const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
    for (let off = 0; off < bytes; off += buf.length) {
      const n = Math.min(buf.length, bytes - off);
      randomFillSync(buf, 0, n);
      writeSync(fd, buf, 0, n, off);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
