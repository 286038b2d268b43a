import { constants, type FileHandle, lstat, open } from "node:fs/promises";
import { posix } from "node:path";
import { isZero, zeroCopy, ZeroCopyUnsupportedError } from "../../../../../native/index.js";
import type { BatchBegin } from "../../domain/data-channel/frames.js";
import { gapsOf, type Segment } from "../../domain/data-channel/segments.js";
import { basenameProblem, partName } from "../../domain/paths.js";
import { PathOutsideRootError } from "../../errors.js";
import { confine, ensureDirInside, errnoOf, fsyncDir } from "../volume-paths.js";
import { FencedError } from "./fenced.js";
import { destinationError } from "./io-errors.js";

const SCRATCH_BYTES = 1024 * 1024;
const ZEROS = new Uint8Array(SCRATCH_BYTES);

/**
 * The `.part` file one batch writes into, opened after re-validating the sender's directory and
 * name against our roots. Writes are positional and idempotent: a redelivered batch writes the
 * same bytes to the same places, and zero ranges become (or stay) holes.
 */
export class DestinationFile {
  private scratch: Buffer | undefined;
  private dirsToSync: string[];

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    /** Everything at or past this offset was a hole when we opened the file (we extended it). */
    private readonly knownHoleFrom: number,
    dirsToSync: string[],
  ) {
    this.dirsToSync = dirsToSync;
  }

  /** Confine, mkdir -p inside the root, open (create, never truncate) and extend to the volume size. */
  static async open(roots: readonly string[], begin: BatchBegin): Promise<DestinationFile> {
    const nameProblem = basenameProblem(begin.destName);
    if (nameProblem !== undefined) throw new PathOutsideRootError(begin.destName, nameProblem);
    const dir = await confine(roots, begin.destDir, { mustExist: false });
    const path = posix.join(dir, partName(begin.destName));
    // Finalize renamed .part to the final name: only a stale sender still sends batches for it,
    // and letting it in would leave a new .part behind (planning refuses existing destinations).
    if (await exists(posix.join(dir, begin.destName))) {
      throw new FencedError(`${begin.destDir}/${begin.destName} is already finalized; batch ${begin.batch} is stale`);
    }
    try {
      const createdDirs = await ensureDirInside(roots, dir);
      const { fh, created } = await openPart(path);
      try {
        const st = await fh.stat();
        if (!st.isFile()) throw new PathOutsideRootError(path, "exists and is not a regular file");
        if (st.size < begin.volumeSizeBytes) await fh.truncate(begin.volumeSizeBytes);
        // New entries need their parent directory synced to survive a crash.
        const dirs = createdDirs.map((d) => posix.dirname(d));
        if (created) dirs.push(dir);
        return new DestinationFile(fh, path, st.size, [...new Set(dirs)]);
      } catch (err) {
        await fh.close();
        throw err;
      }
    } catch (err) {
      throw destinationError(err, path);
    }
  }

  /**
   * Write one verified chunk: only the segments' bytes; the gaps become holes. `data` is the
   * whole logical chunk (undefined for an all-zero chunk).
   */
  async writeChunk(offset: number, length: number, segments: readonly Segment[], data: Uint8Array | undefined): Promise<void> {
    try {
      for (const s of segments) {
        if (data === undefined) throw new Error("segments without data");
        await writeAll(this.fh, data.subarray(s.relOffset, s.relOffset + s.length), offset + s.relOffset);
      }
      for (const gap of gapsOf(segments, length)) await this.clear(offset + gap.relOffset, gap.length);
    } catch (err) {
      throw destinationError(err, `${this.path} at offset ${offset}`);
    }
  }

  /** fsync the file, and once, the directories whose entries we created. */
  async sync(): Promise<void> {
    try {
      await this.fh.sync();
      for (const dir of this.dirsToSync) await fsyncDir(dir);
      this.dirsToSync = [];
    } catch (err) {
      throw destinationError(err, this.path);
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /** Make [start, start+length) read as zeros without allocating blocks where possible. */
  private async clear(start: number, length: number): Promise<void> {
    const end = start + length;
    if (start >= this.knownHoleFrom) return;
    if (!(await this.hasData(start, Math.min(end, this.knownHoleFrom)))) return;
    if (zeroCopy.available) {
      try {
        zeroCopy.punchHole(this.fh.fd, start, length);
        return;
      } catch (err) {
        if (!(err instanceof ZeroCopyUnsupportedError)) throw err; // e.g. no PUNCH_HOLE here: write zeros
      }
    }
    for (let at = start; at < end; at += SCRATCH_BYTES) {
      await writeAll(this.fh, ZEROS.subarray(0, Math.min(SCRATCH_BYTES, end - at)), at);
    }
  }

  private async hasData(start: number, end: number): Promise<boolean> {
    if (zeroCopy.available) {
      const next = zeroCopy.seekData(this.fh.fd, start);
      return next >= 0 && next < end;
    }
    this.scratch ??= Buffer.allocUnsafeSlow(SCRATCH_BYTES);
    for (let at = start; at < end; at += SCRATCH_BYTES) {
      const want = Math.min(SCRATCH_BYTES, end - at);
      const { bytesRead } = await this.fh.read(this.scratch, 0, want, at);
      if (!isZero(this.scratch.subarray(0, bytesRead))) return true;
    }
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (errnoOf(err) === "ENOENT" || errnoOf(err) === "ENOTDIR") return false;
    throw destinationError(err, path);
  }
}

async function openPart(path: string): Promise<{ fh: FileHandle; created: boolean }> {
  const base = constants.O_RDWR | constants.O_NOFOLLOW;
  try {
    return { fh: await open(path, base | constants.O_CREAT | constants.O_EXCL, 0o640), created: true };
  } catch (err) {
    if (errnoOf(err) !== "EEXIST") throw err;
    return { fh: await open(path, base), created: false };
  }
}

export async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    if (bytesWritten === 0) throw new Error("write made no progress");
    done += bytesWritten;
  }
}
