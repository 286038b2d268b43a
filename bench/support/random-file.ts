import { randomFillSync } from "node:crypto";
import { open } from "node:fs/promises";

/**
 * Cryptographically random bytes: no codec finds anything in them. (cli/image.ts's seeded
 * generator repeats within a few MiB, which zstd's window finds.) Written asynchronously: a
 * bench writes its inputs beside a running stack, whose NATS connection (pings every 10 s,
 * request timeouts) must not see an event loop blocked for the minute gigabytes take.
 */
export async function writeCryptoRandom(path: string, bytes: number): Promise<void> {
  const fh = await open(path, "w");
  try {
    const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
    for (let off = 0; off < bytes; off += buf.length) {
      const n = Math.min(buf.length, bytes - off);
      randomFillSync(buf, 0, n);
      await fh.write(buf, 0, n, off);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}
