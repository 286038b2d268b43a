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
