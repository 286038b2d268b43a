import type { FileHandle } from "node:fs/promises";
import { crc32c, crc32cZeros, zeroCopy } from "../../../../native/index.js";

const BLOCK_BYTES = 8 * 1024 * 1024;

/**
 * CRC32C of the first `size` bytes of a file, read in large blocks with the CRC carried from
 * one block to the next. With SEEK_DATA/SEEK_HOLE (native) holes are not read at all: a run of
 * zeros is folded in arithmetically (crc32cZeros), so verifying a sparse image costs what its
 * data costs.
 */
export async function fileCrc32c(fh: FileHandle, size: number): Promise<number> {
  const buffer = Buffer.allocUnsafeSlow(Math.min(BLOCK_BYTES, Math.max(size, 1)));
  let crc = 0;
  let at = 0;
  while (at < size) {
    const extent = dataExtent(fh.fd, at, size);
    if (extent.start > at) crc = crc32cZeros(extent.start - at, crc);
    at = extent.start;
    while (at < extent.end) {
      const want = Math.min(buffer.length, extent.end - at);
      const { bytesRead } = await fh.read(buffer, 0, want, at);
      if (bytesRead === 0) throw new Error(`file ended at ${at}, expected ${size} bytes`);
      crc = crc32c(buffer.subarray(0, bytesRead), crc);
      at += bytesRead;
    }
  }
  return crc >>> 0;
}

/** The next range worth reading at or after `at`; without SEEK_DATA, everything up to `size`. */
function dataExtent(fd: number, at: number, size: number): { start: number; end: number } {
  if (!zeroCopy.available) return { start: at, end: size };
  const start = zeroCopy.seekData(fd, at);
  if (start < 0 || start >= size) return { start: size, end: size };
  const hole = zeroCopy.seekHole(fd, start);
  return { start, end: hole < 0 ? size : Math.min(hole, size) };
}
