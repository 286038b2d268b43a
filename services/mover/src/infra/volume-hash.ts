import type { FileHandle } from "node:fs/promises";
import { crc32c, crc32cCombine, crc32cZeros, DIRECT_IO_ALIGN, strongHash, volumeHash } from "#native/index.js";
import { openDirectRead } from "#common/fs.js";
import { FileEndedEarlyError } from "../errors.js";
import { chunkBuffers } from "./data-channel/buffer-pool.js";
import { hasDataIn } from "./extents.js";
import { VERIFY_READS_IN_FLIGHT } from "./volume-crc.js";

/**
 * End-to-end integrity by BLAKE3. The source hashes each chunk as it reads it (source-volume.ts)
 * and logs the hashes in ChunkBatchTransferred; the destination hashes each chunk it accepts,
 * from the same pooled buffer it checked the CRC32C of, and keeps the hashes beside its
 * read-back records (read-back.ts). Finalize compares the volume hash the coordinator built from
 * the log (native volumeHash: BLAKE3 over the chunk hashes in offset order) with the one built
 * from what the destination received, or read back from the disk when its records do not cover
 * the volume. The log travels over NATS and the bytes over the data channel: a path that alters
 * bytes and fixes their CRC32C cannot fix the log too.
 *
 * Hashes travel as unpadded base64url (43 characters per hash).
 */
export const encodeHash = (hash: Uint8Array): string => Buffer.from(hash).toString("base64url");

/** The hashes of `encoded` (a concatenation of whole base64url hashes, or one hash). */
export function decodeHashes(encoded: string): Buffer {
  return Buffer.from(encoded, "base64url");
}

/** Unpadded base64url of several hashes at once: one string, for the read-back records. */
export function encodeHashList(hashes: readonly string[]): string {
  return Buffer.concat(hashes.map(decodeHashes)).toString("base64url");
}

/** The volume hash (base64url) of chunk hashes given in offset order, as base64url strings. */
export function volumeHashOf(chunkHashes: readonly string[]): string {
  return encodeHash(volumeHash(Buffer.concat(chunkHashes.map(decodeHashes))));
}

/** Distinct lengths of all-zero chunks remembered: the chunk size and a few volumes' last chunk. */
const ZERO_HASHES_KEPT = 16;
const zeroHashes = new Map<number, Promise<string>>();

/**
 * BLAKE3 of `length` zero bytes: the hash of a chunk that is a hole or reads as zeros, on either
 * side, whether or not its bytes crossed the wire. Computed once per length.
 */
export function zeroChunkHash(length: number): Promise<string> {
  let hash = zeroHashes.get(length);
  if (hash === undefined) {
    hash = strongHash(Buffer.alloc(length)).then(encodeHash);
    hash.catch(() => zeroHashes.delete(length));
    if (zeroHashes.size >= ZERO_HASHES_KEPT) zeroHashes.delete(zeroHashes.keys().next().value as number);
    zeroHashes.set(length, hash);
  }
  return hash;
}

/** BLAKE3 of one chunk's bytes (`allZero`: known to be zeros, taken from the cache). */
export async function chunkHash(data: Uint8Array, allZero = false): Promise<string> {
  return allZero ? zeroChunkHash(data.length) : encodeHash(await strongHash(data));
}

export interface DiskDigests {
  /** CRC32C of the whole range. */
  crc32c: number;
  /** BLAKE3 of each chunk, in offset order. */
  chunkHashes: string[];
}

/**
 * CRC32C and per-chunk BLAKE3 of bytes [0, size) of the file at `path` (open as `fh`), chunk by
 * chunk as the plan cut it, in one pass from the disk: finalize's fallback when the read-back
 * records do not cover the volume. Chunks that lie in a hole are not read. O_DIRECT where the
 * file system has it, as for diskCrc32c.
 */
export async function diskDigests(fh: FileHandle, path: string, size: number, chunkSize: number): Promise<DiskDigests> {
  const count = Math.ceil(size / chunkSize);
  const crcs = new Array<number>(count).fill(0);
  const hashes = new Array<string>(count).fill("");
  const direct = await openDirectRead(path);
  let next = 0;
  const reader = async (): Promise<void> => {
    const buffer = chunkBuffers.take(chunkSize);
    const directOk = direct !== undefined && chunkBuffers.isAligned(buffer);
    try {
      for (let i = next++; i < count; i = next++) {
        const start = i * chunkSize;
        const length = Math.min(chunkSize, size - start);
        if (hasDataIn(fh.fd, start, start + length) === false) {
          crcs[i] = crc32cZeros(length);
          hashes[i] = await zeroChunkHash(length);
          continue;
        }
        for (let done = 0; done < length; ) {
          const want = length - done;
          const viaDirect = directOk && (start + done) % DIRECT_IO_ALIGN === 0;
          const ask = viaDirect ? Math.min(buffer.length - done, alignUp(want)) : want;
          const { bytesRead } = await (viaDirect ? direct : fh).read(buffer, done, ask, start + done);
          const n = Math.min(bytesRead, want);
          if (n === 0) throw new FileEndedEarlyError(`file ended at ${start + done}, expected ${size} bytes`);
          done += n;
        }
        const data = buffer.subarray(0, length);
        crcs[i] = crc32c(data);
        hashes[i] = await chunkHash(data);
      }
    } finally {
      chunkBuffers.give(buffer);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(VERIFY_READS_IN_FLIGHT, Math.max(1, count)) }, reader));
  } finally {
    await direct?.close();
  }
  let crc = 0;
  crcs.forEach((c, i) => (crc = crc32cCombine(crc, c, Math.min(chunkSize, size - i * chunkSize))));
  return { crc32c: crc >>> 0, chunkHashes: hashes };
}

const alignUp = (n: number): number => Math.ceil(n / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
