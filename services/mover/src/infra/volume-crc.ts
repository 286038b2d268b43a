import type { FileHandle } from "node:fs/promises";
import { crc32c, crc32cCombine, crc32cZeros, DIRECT_IO_ALIGN } from "#native/index.js";
import { DEFAULT_CHUNK_BYTES } from "#schemas/common.js";
import { openDirectRead } from "#common/fs.js";
import { FileEndedEarlyError } from "../errors.js";
import { chunkBuffers } from "./data-channel/buffer-pool.js";
import { dataExtents } from "./extents.js";

/** The default chunk size: verify blocks share the chunk buffers' size class (and their prefill). */
const BLOCK_BYTES = DEFAULT_CHUNK_BYTES;
/** Blocks read at once: keeps the disk's queue busy and both cores copying and checksumming. */
export const VERIFY_READS_IN_FLIGHT = 4;

interface Block {
  start: number;
  length: number;
  /** CRC32C of the block's bytes; `undefined` for a hole (zeros, folded in arithmetically). */
  crc?: number;
  hole: boolean;
}

/**
 * CRC32C of bytes [start, end) of the file at `path` as the disk holds it: `fh` (open on `path`)
 * plus an O_DIRECT handle of its own where the file system has one (openDirectRead), so a
 * read-back checks the disk and not the page cache.
 */
export async function diskCrc32c(fh: FileHandle, path: string, start: number, end: number): Promise<number> {
  const direct = await openDirectRead(fh);
  try {
    return await rangeCrc32c(fh, start, end, direct);
  } finally {
    await direct?.close();
  }
}

/**
 * CRC32C of bytes [start, end) of a file. With SEEK_DATA/SEEK_HOLE (native) holes are not read
 * at all: a run of zeros is folded in arithmetically (crc32cZeros), so verifying a sparse image
 * costs what its data costs. Data is read in 4 MiB blocks, several at once, each block's CRC
 * computed as it lands and the CRCs combined in file order (crc32cCombine).
 *
 * `direct`, an O_DIRECT handle on the same file (openDirectRead), reads from the disk instead of
 * the page cache wherever a read starts 4 KiB-aligned into an aligned buffer (the request is
 * rounded up to 4 KiB; only the bytes asked for count); `fh` reads the rest.
 */
export async function rangeCrc32c(fh: FileHandle, start: number, end: number, direct?: FileHandle): Promise<number> {
  const blocks = layout(fh.fd, start, end);
  const blockBytes = alignUp(Math.min(BLOCK_BYTES, Math.max(end - start, 1)));
  let next = 0;
  const reader = async (): Promise<void> => {
    const buffer = chunkBuffers.take(blockBytes);
    const directOk = direct !== undefined && chunkBuffers.isAligned(buffer);
    try {
      for (let i = next++; i < blocks.length; i = next++) {
        const b = blocks[i] as Block;
        if (b.hole) continue;
        let crc = 0;
        for (let done = 0; done < b.length; ) {
          const at = b.start + done;
          const want = Math.min(buffer.length, b.length - done);
          const viaDirect = directOk && at % DIRECT_IO_ALIGN === 0;
          const ask = viaDirect ? Math.min(buffer.length, alignUp(want)) : want;
          const { bytesRead } = await (viaDirect ? direct : fh).read(buffer, 0, ask, at);
          const n = Math.min(bytesRead, want);
          if (n === 0) throw new FileEndedEarlyError(`file ended at ${at}, expected ${end} bytes`);
          crc = crc32c(buffer.subarray(0, n), crc);
          done += n;
        }
        b.crc = crc;
      }
    } finally {
      chunkBuffers.give(buffer);
    }
  };
  await Promise.all(Array.from({ length: Math.min(VERIFY_READS_IN_FLIGHT, Math.max(1, blocks.length)) }, reader));
  let crc = 0;
  for (const b of blocks) crc = b.hole ? crc32cZeros(b.length, crc) : crc32cCombine(crc, b.crc ?? 0, b.length);
  return crc >>> 0;
}

const alignUp = (n: number): number => Math.ceil(n / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;

/** Bytes [start, end) of the file as holes and data blocks of at most BLOCK_BYTES, in order. */
function layout(fd: number, start: number, end: number): Block[] {
  const blocks: Block[] = [];
  let at = start;
  for (const extent of dataExtents(fd, end, start)) {
    if (extent.start > at) blocks.push({ start: at, length: extent.start - at, hole: true });
    for (let b = extent.start; b < extent.end; b += BLOCK_BYTES) {
      blocks.push({ start: b, length: Math.min(BLOCK_BYTES, extent.end - b), hole: false });
    }
    at = extent.end;
  }
  if (end > at) blocks.push({ start: at, length: end - at, hole: true });
  return blocks;
}
