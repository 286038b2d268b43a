import { constants, open, type FileHandle } from "node:fs/promises";
import { analyzeChunk, crc32cCombine, crc32cZeros, PAGE_SIZE, strongHash, type ChunkAnalysis } from "#native/index.js";
import { segmentsFromZeroPages, type Segment } from "../../domain/data-channel/segments.js";
import { PathOutsideRootError, SourceChangedError, SourceReadError } from "../../errors.js";
import { dataExtents, type Extent } from "../extents.js";
import { encodeHash, zeroChunkHash } from "../volume-hash.js";
import { errnoOf, openConfined } from "../volume-paths.js";

/** One chunk read and analyzed, ready to be framed. */
export interface PreparedChunk {
  offset: number;
  length: number;
  crc32c: number;
  /** BLAKE3-256 of the chunk's bytes, base64url (volume-hash.ts); a hole hashes as its zeros. */
  blake3: string;
  zero: boolean;
  /** Coalesced non-zero 4 KiB runs; empty for an all-zero chunk. */
  segments: Segment[];
  /** The logical chunk (a view of a pooled buffer, valid until it is reused); undefined if never read. */
  data: Uint8Array | undefined;
}

/**
 * The source volume, read with positional reads only (any number of readers may share it).
 * The caller has already confined `path` to this mover's roots (a canonical path); given those
 * `roots`, it is opened beneath the root's held fd with no symlink followed, so a file swapped
 * for a symlink after the check is refused, never read. Without roots (a caller that owns the
 * path, such as a test) only a final symlink is refused (O_NOFOLLOW).
 */
export class SourceVolume {
  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
  ) {}

  static async open(path: string, expectedSizeBytes: number, roots?: readonly string[]): Promise<SourceVolume> {
    let fh: FileHandle;
    try {
      fh = await (roots === undefined
        ? open(path, constants.O_RDONLY | constants.O_NOFOLLOW)
        : openConfined(roots, path));
    } catch (err) {
      if (err instanceof PathOutsideRootError) throw err;
      throw new SourceReadError(`cannot open source ${path}: ${errnoOf(err) ?? String(err)}`, { cause: err });
    }
    const { size } = await fh.stat();
    if (size !== expectedSizeBytes) {
      await fh.close();
      throw new SourceChangedError(`source ${path} is ${size} bytes, the plan says ${expectedSizeBytes}`);
    }
    return new SourceVolume(fh, path);
  }

  get fd(): number {
    return this.fh.fd;
  }

  /**
   * Read [offset, offset+length) into `buffer` and compute its CRC32C, BLAKE3 and non-zero
   * segments. The BLAKE3 runs on the libuv pool (for chunks of 256 KiB and more) while this
   * thread computes the CRC32C and zero map of the same bytes, still in cache: no copy.
   */
  async prepare(offset: number, length: number, buffer: Buffer): Promise<PreparedChunk> {
    // No run: the chunk lies entirely in a hole and is not read.
    const runs = readRuns(this.fh.fd, offset, length);
    if (runs.length === 0) {
      const blake3 = await zeroChunkHash(length);
      return { offset, length, crc32c: crc32cZeros(length), blake3, zero: true, segments: [], data: undefined };
    }
    const data = buffer.subarray(0, length);
    await this.readData(data, offset, runs);
    // Started first: the hash goes to the pool, then the analysis runs here. Both settle before
    // we return, so the buffer is never handed on while the pool still reads it.
    const hashing = strongHash(data);
    const analyzing = analyzeRuns(data, runs);
    await Promise.allSettled([hashing, analyzing]);
    const [analysis, blake3] = [await analyzing, encodeHash(await hashing)];
    const segments = analysis.allZero ? [] : segmentsFromZeroPages(analysis.zeroPages, length);
    return { offset, length, crc32c: analysis.crc32c >>> 0, blake3, zero: segments.length === 0, segments, data };
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /**
   * The bytes at `offset` into `target`: the file's data extents read, its holes filled with
   * zeros here. A hole read through the kernel costs a zeroed page-cache page per 4 KiB (on a
   * VM, fresh guest memory the first time) and a copy; a sparse image's chunks are mostly holes.
   */
  private async readData(target: Buffer, offset: number, runs: readonly Extent[]): Promise<void> {
    let at = 0;
    for (const e of runs) {
      if (e.start > at) target.fill(0, at, e.start);
      await this.readFully(target.subarray(e.start, e.end), offset + e.start);
      at = e.end;
    }
    if (at < target.length) target.fill(0, at);
  }

  private async readFully(target: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < target.length) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.fh.read(target, done, target.length - done, offset + done));
      } catch (err) {
        throw new SourceReadError(`reading ${this.path} at ${offset + done}: ${errnoOf(err) ?? String(err)}`, {
          cause: err,
        });
      }
      if (bytesRead === 0) {
        throw new SourceChangedError(
          `${this.path} ended at ${offset + done}, expected ${offset + target.length} bytes`,
        );
      }
      done += bytesRead;
    }
  }
}

/** Holes shorter than this are read through: one read instead of two, and two fewer seeks. */
export const READ_THROUGH_HOLE_BYTES = 64 * 1024;
/** More runs than this in one chunk (a very fragmented file) and the chunk is read whole. */
export const MAX_READ_RUNS = 64;

/**
 * The runs of [offset, offset + length) of the open file `fd` to read, relative to `offset`:
 * its data extents, those less than READ_THROUGH_HOLE_BYTES apart joined. The whole range when
 * extents cannot be told (no native module, or the file system refuses SEEK_DATA) or there
 * would be more than MAX_READ_RUNS.
 */
export function readRuns(fd: number, offset: number, length: number): Extent[] {
  const whole = [{ start: 0, end: length }];
  const runs: Extent[] = [];
  try {
    for (const e of dataExtents(fd, offset + length, offset)) {
      const start = e.start - offset;
      const end = e.end - offset;
      const last = runs[runs.length - 1];
      if (last !== undefined && start - last.end < READ_THROUGH_HOLE_BYTES) last.end = end;
      else if (runs.length === MAX_READ_RUNS) return whole;
      else runs.push({ start, end });
    }
  } catch {
    return whole;
  }
  return runs;
}

/**
 * CRC32C and zero map of a chunk read as `runs` (readRuns), zeros elsewhere: each run analyzed,
 * the holes between them counted as zero pages and folded into the CRC32C in O(log n) each, so
 * the holes of a sparse chunk are never scanned. The whole chunk is analyzed when a run does not
 * start and end on a page boundary (or the chunk's end).
 */
export async function analyzeRuns(data: Uint8Array, runs: readonly Extent[]): Promise<ChunkAnalysis> {
  const aligned = (at: number): boolean => at % PAGE_SIZE === 0 || at === data.length;
  const whole = runs.length === 1 && runs[0]?.start === 0 && runs[0].end === data.length;
  if (whole || !runs.every((r) => aligned(r.start) && aligned(r.end))) return analyzeChunk(data);
  const zeroPages = new Uint8Array(Math.ceil(data.length / PAGE_SIZE)).fill(1);
  let crc = 0;
  let allZero = true;
  let at = 0;
  for (const r of runs) {
    const a = await analyzeChunk(data.subarray(r.start, r.end));
    crc = crc32cCombine(crc32cZeros(r.start - at, crc), a.crc32c >>> 0, r.end - r.start);
    zeroPages.set(a.zeroPages, r.start / PAGE_SIZE);
    allZero &&= a.allZero;
    at = r.end;
  }
  return { crc32c: crc32cZeros(data.length - at, crc), allZero, zeroPages };
}
