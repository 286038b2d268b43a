import type { FileHandle } from "node:fs/promises";
import { readAll } from "#common/fs.js";
import { analyzeChunk, strongHash, type ChunkAnalysis } from "#native/index.js";
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
  const read = await digestBase(base, h.offset, into.subarray(0, h.length));
  if (!read.whole) {
    return {
      ok: false,
      code: BASE_MISMATCH,
      reason: `the base ends at ${h.offset + read.done}, before this chunk's end`,
    };
  }
  const { data, hash, analysis } = read;
  if (!hash.equals(expected) || analysis.crc32c >>> 0 !== h.crc32c) {
    return { ok: false, code: BASE_MISMATCH, reason: "the base's bytes differ from the source's here" };
  }
  const segments = analysis.allZero ? [] : segmentsFromZeroPages(analysis.zeroPages, h.length);
  return { ok: true, data, segments, blake3: encodeHash(hash) };
}

/**
 * The base's bytes at `offset`, as many as `into` holds, read into it and digested: BLAKE3 and
 * the CRC32C with the zero map, both on the same bytes at once (the hash on the pool). A base
 * that ends first is `whole: false` with the bytes it had (`done`).
 */
export async function digestBase(
  base: FileHandle,
  offset: number,
  into: Buffer,
): Promise<{ whole: true; data: Buffer; hash: Buffer; analysis: ChunkAnalysis } | { whole: false; done: number }> {
  let done: number;
  try {
    done = await readAll(base, into, offset);
  } catch (err) {
    throw destinationError(err, `base file at offset ${offset}`);
  }
  if (done < into.length) return { whole: false, done };
  const hashing = strongHash(into);
  const analyzing = analyzeChunk(into);
  await Promise.allSettled([hashing, analyzing]);
  return { whole: true, data: into, hash: await hashing, analysis: await analyzing };
}
