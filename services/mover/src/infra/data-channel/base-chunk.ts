import type { FileHandle } from "node:fs/promises";
import { readAll } from "#common/fs.js";
import { analyzeChunk, strongHash } from "#native/index.js";
import { BASE_MISMATCH, NO_BASE, type ChunkHeader } from "../../domain/data-channel/frames.js";
import { segmentsFromZeroPages, type Segment } from "../../domain/data-channel/segments.js";
import { encodeHash } from "../volume-hash.js";
import { destinationError } from "./io-errors.js";

/** The base's bytes of a chunk that match the source's: written as if they had been received. */
export interface BaseHit {
  ok: true;
  /** The logical chunk, read from the base into the caller's buffer. */
  data: Uint8Array;
  /** Its non-zero 4 KiB runs (the rest is written as holes, as for a received chunk). */
  segments: Segment[];
  /** BLAKE3 (base64url), equal to the source's. */
  blake3: string;
}

export interface BaseMiss {
  ok: false;
  code: typeof BASE_MISMATCH | typeof NO_BASE;
  reason: string;
}

/**
 * A BASE chunk at the destination: read the base file's bytes at the chunk's offset and length
 * into `into` and accept them only if both their BLAKE3 and CRC32C are the source's (the frame's
 * digest and header). A miss (no base, a shorter base, other bytes) is answered with CHUNK_ERR
 * and the source sends the chunk's data instead, so nothing written ever depends on the base
 * being the right file.
 */
export async function matchBase(
  base: FileHandle | undefined,
  h: ChunkHeader,
  into: Buffer,
): Promise<BaseHit | BaseMiss> {
  const expected = h.base;
  if (base === undefined || expected === undefined) {
    return { ok: false, code: NO_BASE, reason: "the destination has no base file for this volume" };
  }
  const data = into.subarray(0, h.length);
  let done: number;
  try {
    done = await readAll(base, data, h.offset);
  } catch (err) {
    throw destinationError(err, `base file at offset ${h.offset}`);
  }
  if (done < h.length) {
    return { ok: false, code: BASE_MISMATCH, reason: `the base ends at ${h.offset + done}, before this chunk's end` };
  }
  // Both on the same bytes at once: the hash on the pool, the CRC32C and zero map here.
  const hashing = strongHash(data);
  const analyzing = analyzeChunk(data);
  await Promise.allSettled([hashing, analyzing]);
  const [hash, analysis] = [await hashing, await analyzing];
  if (!hash.equals(expected) || analysis.crc32c >>> 0 !== h.crc32c) {
    return { ok: false, code: BASE_MISMATCH, reason: "the base's bytes differ from the source's here" };
  }
  const segments = analysis.allZero ? [] : segmentsFromZeroPages(analysis.zeroPages, h.length);
  return { ok: true, data, segments, blake3: encodeHash(hash) };
}
