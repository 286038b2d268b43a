import type { Migration } from "../domain/migration/state.js";

/**
 * CRC32C of each whole volume, merged from the chunk checksums the movers logged, in offset
 * order, without re-reading a byte. `combine(a, b, lenB)` is crc(A||B) from crc(A) and crc(B).
 */
export function volumeChecksums(m: Migration, combine: (a: number, b: number, lenB: number) => number): number[] {
  if (!m.plan) return [];
  return m.plan.volumes.map((v) => {
    let crc = 0;
    for (let b = v.firstBatch; b < v.firstBatch + v.batchCount; b++) {
      const chunks = [...(m.batches[b]?.chunks ?? [])].sort((x, y) => x.offset - y.offset);
      for (const c of chunks) crc = combine(crc, c.crc32c, c.length);
    }
    return crc;
  });
}

/**
 * BLAKE3 of each whole volume from the chunk hashes the source movers logged: `tree` (native
 * volumeHash) over the chunk hashes in offset order, base64url. Undefined for a volume with a
 * chunk logged without a hash (an older mover): unverifiable by hash, the destination then checks
 * its CRC32C only.
 */
export function volumeHashes(m: Migration, tree: (chunkHashes: Uint8Array) => Uint8Array): (string | undefined)[] {
  if (!m.plan) return [];
  return m.plan.volumes.map((v) => {
    const hashes: Buffer[] = [];
    for (let b = v.firstBatch; b < v.firstBatch + v.batchCount; b++) {
      const chunks = [...(m.batches[b]?.chunks ?? [])].sort((x, y) => x.offset - y.offset);
      for (const c of chunks) {
        if (c.blake3 === undefined) return undefined;
        hashes.push(Buffer.from(c.blake3, "base64url"));
      }
    }
    return Buffer.from(tree(Buffer.concat(hashes))).toString("base64url");
  });
}
