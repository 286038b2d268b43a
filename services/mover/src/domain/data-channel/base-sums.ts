import type { BaseSum } from "./frames.js";

/**
 * What a link learned of the destination's base ahead of its chunks (BASE_SUMS, revision 1.1):
 * the digests of the base's chunks from the first on, in order, for one migration's volume. The
 * source compares its own chunk with them: a chunk the base holds goes as a BASE reference that
 * will hit, a changed one with its data at once, and one not covered yet as a reference as
 * before. Only a hint: the destination still checks every reference against its base. Pure.
 */
export class BaseSums {
  /** Chunks covered from offset 0: every chunk below `through` is known. */
  private through = 0;
  private readonly sums = new Map<number, Exclude<BaseSum, "none">>();

  constructor(readonly chunkSizeBytes: number) {}

  /** Bytes of the volume covered so far. */
  get coveredBytes(): number {
    return this.through;
  }

  /** Adds one BASE_SUMS frame; a problem (not the next run of chunks) is returned, not thrown. */
  add(offset: number, sums: readonly BaseSum[]): string | undefined {
    if (offset !== this.through) return `BASE_SUMS at offset ${offset}, expected ${this.through}`;
    sums.forEach((s, i) => {
      if (s !== "none") this.sums.set(offset + i * this.chunkSizeBytes, s);
    });
    this.through = offset + sums.length * this.chunkSizeBytes;
    return undefined;
  }

  /** What the base holds at the chunk at `offset`, as far as is known. */
  known(offset: number, chunk: { crc32c: number; blake3: Uint8Array }): BaseKnown {
    if (offset >= this.through) return "unknown";
    const s = this.sums.get(offset);
    if (s === undefined || s.crc32c !== chunk.crc32c >>> 0) return "differs";
    return equalBytes(s.blake3, chunk.blake3) ? "same" : "differs";
  }
}

/**
 * "unknown": not covered yet; "same": the base's digests are the chunk's; "differs": they are
 * not, or the base has no data there.
 */
export type BaseKnown = "unknown" | "same" | "differs";

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
