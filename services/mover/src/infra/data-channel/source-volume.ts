import { constants, open, type FileHandle } from "node:fs/promises";
import { analyzeChunk, crc32cZeros } from "#native/index.js";
import { segmentsFromZeroPages, type Segment } from "../../domain/data-channel/segments.js";
import { PathOutsideRootError, SourceChangedError, SourceReadError } from "../../errors.js";
import { hasDataIn } from "../extents.js";
import { errnoOf, openConfined } from "../volume-paths.js";

/** One chunk read and analyzed, ready to be framed. */
export interface PreparedChunk {
  offset: number;
  length: number;
  crc32c: number;
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

  /** Read [offset, offset+length) into `buffer` and compute its CRC32C and non-zero segments. */
  async prepare(offset: number, length: number, buffer: Buffer): Promise<PreparedChunk> {
    if (this.isHole(offset, length)) {
      return { offset, length, crc32c: crc32cZeros(length), zero: true, segments: [], data: undefined };
    }
    const data = buffer.subarray(0, length);
    await this.readFully(data, offset);
    const analysis = await analyzeChunk(data);
    const segments = analysis.allZero ? [] : segmentsFromZeroPages(analysis.zeroPages, length);
    return { offset, length, crc32c: analysis.crc32c >>> 0, zero: segments.length === 0, segments, data };
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /** A chunk that lies entirely in a hole need not be read (SEEK_DATA, when native is loaded). */
  private isHole(offset: number, length: number): boolean {
    try {
      return hasDataIn(this.fh.fd, offset, offset + length) === false;
    } catch {
      return false;
    }
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
