import { constants, type FileHandle } from "node:fs/promises";
import { posix } from "node:path";
import { DIRECT_IO_ALIGN, isZero, PathRefusedError, zeroCopy, ZeroCopyUnsupportedError } from "#native/index.js";
import type { DirHandle } from "#native/index.js";
import { batchRange } from "../../domain/data-channel/batch.js";
import type { BatchBegin } from "../../domain/data-channel/frames.js";
import { gapsOf, type Segment } from "../../domain/data-channel/segments.js";
import { basenameProblem, partName } from "../../domain/paths.js";
import { DestinationWriteError, PathOutsideRootError } from "../../errors.js";
import { DIRECT_MIN_BYTES, EarlyWriteback, openDirect, writeAll } from "#common/fs.js";
import { hasDataIn } from "../extents.js";
import { wasFinalized } from "../finalized.js";
import { confine, errnoOf, makeDirConfined } from "../volume-paths.js";
import { chunkBuffers } from "./buffer-pool.js";
import { FencedError } from "./fenced.js";
import { destinationError } from "./io-errors.js";

const SCRATCH_BYTES = 1024 * 1024;
const ZEROS = new Uint8Array(SCRATCH_BYTES);

/**
 * The `.part` file one batch writes into, opened after re-validating the sender's directory and
 * name against our roots. Writes are positional and idempotent: a redelivered batch writes the
 * same bytes to the same places, and zero ranges become (or stay) holes.
 *
 * Large page-aligned segments (>= 1 MiB, from the aligned chunk buffers) are written with
 * O_DIRECT: straight from our buffer to the disk, no page-cache copy and no dirty pages for the
 * batch's fsync to flush; on this kind of VM, filling page-cache memory and writing it back
 * costs twice what the disk write itself does. Small segments (a sparse image's scattered
 * extents), a volume's last partial page, and everything on file systems without O_DIRECT
 * (tmpfs) go through the page cache, where each chunk's writeback starts as soon as it is written
 * (sync_file_range) so the fsync only waits for the tail: an allocating O_DIRECT write of a few
 * pages waits for the disk under the inode lock, which made sparse images slower.
 * DWCP_DIRECT_IO=off|on forces either way for every aligned segment.
 */
export class DestinationFile {
  private scratch: Buffer | undefined;
  /** The directory holding the `.part`, held open while its new entry still needs an fsync. */
  private dirToSync: DirHandle | undefined;
  /** Overlaps writeback with receiving: the batch's fsync waits only for the last chunks. */
  private readonly writeback = new EarlyWriteback();

  private constructor(
    private readonly fh: FileHandle,
    /** The same file opened with O_DIRECT, or undefined (refused here, or DWCP_DIRECT_IO=off). */
    private readonly direct: { fh: FileHandle; everyAligned: boolean } | undefined,
    readonly path: string,
    /** Everything at or past this offset was a hole when we opened the file (we extended it). */
    private readonly knownHoleFrom: number,
    /**
     * The batch's byte range if it held no data when we opened the file: its gaps need no
     * clearing. The batch's own chunks are disjoint, and an older sender of the batch is fenced
     * and its writes settled before this file is opened (server-batch.ts).
     */
    private readonly emptyRange: { start: number; end: number } | undefined,
    dirToSync: DirHandle | undefined,
    /**
     * An incremental batch's base: the volume's final file as it was when the batch began, opened
     * read-only beneath the held directory (undefined: none, or not incremental). Only read.
     */
    readonly base: FileHandle | undefined,
  ) {
    this.dirToSync = dirToSync;
  }

  /**
   * Confine, mkdir -p inside the root, open (create, never truncate) and extend to the volume
   * size. The directories are made and the `.part` opened beneath the root's held fd with no
   * symlink followed: a directory swapped for a symlink after confine() is refused, so no `.part`
   * is ever created outside the root.
   */
  static async open(roots: readonly string[], begin: BatchBegin): Promise<DestinationFile> {
    const nameProblem = basenameProblem(begin.destName);
    if (nameProblem !== undefined) throw new PathOutsideRootError(begin.destName, nameProblem);
    const dirPath = await confine(roots, begin.destDir, { mustExist: false });
    const path = posix.join(dirPath, partName(begin.destName));
    try {
      const { dir } = await makeDirConfined(roots, dirPath);
      let keepDir = false;
      try {
        // Finalize renamed .part to the final name: only a stale sender still sends batches for it,
        // and letting it in would leave a new .part behind (planning refuses existing destinations).
        // An incremental migration's final file is its base, there from the start: this process
        // remembers which migrations it finalized instead (finalized.ts).
        const done =
          begin.incremental === true ? wasFinalized(path, begin.migrationId) : dir.stat(begin.destName) !== undefined;
        if (done) {
          throw new FencedError(
            `${begin.destDir}/${begin.destName} is already finalized; batch ${begin.batch} is stale`,
          );
        }
        const base = begin.incremental === true ? await openBase(dir, begin.destName) : undefined;
        let opened: { fh: FileHandle; created: boolean };
        try {
          opened = await openPart(dir, partName(begin.destName));
        } catch (err) {
          await base?.close();
          throw err;
        }
        const { fh, created } = opened;
        try {
          const st = await fh.stat();
          if (st.size < begin.volumeSizeBytes) await fh.truncate(begin.volumeSizeBytes);
          // A write is at most one chunk's segment: small chunks never go through O_DIRECT.
          const direct = await openDirect(fh, Math.min(begin.chunkSizeBytes, begin.volumeSizeBytes));
          // A new entry needs its directory synced to survive a crash (made parents were synced).
          keepDir = created;
          const range = emptyRange(fh.fd, begin, st.size);
          return new DestinationFile(fh, direct, path, st.size, range, created ? dir : undefined, base);
        } catch (err) {
          await fh.close();
          await base?.close();
          throw err;
        }
      } finally {
        if (!keepDir) dir.close();
      }
    } catch (err) {
      if (err instanceof FencedError) throw err;
      // confine() found a directory inside the root; beneath the held root a component then was
      // not one: the tree was changed under the open (a directory swapped for a symlink or a file).
      if (errnoOf(err) === "ENOTDIR") {
        throw new PathOutsideRootError(path, "a directory on its way was replaced while it was opened", { cause: err });
      }
      throw destinationError(err, path);
    }
  }

  /**
   * Write one verified chunk: only the segments' bytes; the gaps become holes. `data` is the
   * whole logical chunk (undefined for an all-zero chunk).
   */
  async writeChunk(
    offset: number,
    length: number,
    segments: readonly Segment[],
    data: Uint8Array | undefined,
  ): Promise<void> {
    try {
      // Segments and gaps are disjoint ranges: write them all at once (the pool runs them in parallel).
      let buffered = false;
      const writes = segments.map((s) => {
        if (data === undefined)
          throw new DestinationWriteError(`${this.path} at offset ${offset}: segments without data`);
        const bytes = data.subarray(s.relOffset, s.relOffset + s.length);
        const direct = this.canDirect(bytes, offset + s.relOffset);
        buffered ||= direct === undefined;
        return writeAll(direct ?? this.fh, bytes, offset + s.relOffset);
      });
      for (const gap of gapsOf(segments, length)) writes.push(this.clear(offset + gap.relOffset, gap.length));
      await settleAll(writes);
      if (buffered) this.writeback.start(this.fh.fd, offset, length);
    } catch (err) {
      throw destinationError(err, `${this.path} at offset ${offset}`);
    }
  }

  /** fsync the file, and once, the directories whose entries we created. */
  async sync(): Promise<void> {
    await this.writeback.settled();
    try {
      await this.fh.sync();
      await this.dirToSync?.sync();
      this.dirToSync?.close();
      this.dirToSync = undefined;
    } catch (err) {
      throw destinationError(err, this.path);
    }
  }

  async close(): Promise<void> {
    await this.writeback.settled(); // it uses the fd
    this.dirToSync?.close();
    this.dirToSync = undefined;
    await this.direct?.fh.close();
    await this.base?.close();
    await this.fh.close();
  }

  /** The O_DIRECT handle if these bytes may and should use it (aligned, and large unless forced). */
  private canDirect(bytes: Uint8Array, position: number): FileHandle | undefined {
    if (this.direct === undefined || position % DIRECT_IO_ALIGN !== 0 || bytes.length % DIRECT_IO_ALIGN !== 0)
      return undefined;
    if (bytes.length < DIRECT_MIN_BYTES && !this.direct.everyAligned) return undefined;
    return chunkBuffers.isAligned(bytes) ? this.direct.fh : undefined;
  }

  /** Make [start, start+length) read as zeros without allocating blocks where possible. */
  private async clear(start: number, length: number): Promise<void> {
    const end = start + length;
    if (start >= this.knownHoleFrom) return;
    if (this.emptyRange !== undefined && start >= this.emptyRange.start && end <= this.emptyRange.end) return;
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
    const known = hasDataIn(this.fh.fd, start, end);
    if (known !== undefined) return known;
    this.scratch ??= Buffer.allocUnsafeSlow(SCRATCH_BYTES);
    for (let at = start; at < end; at += SCRATCH_BYTES) {
      const want = Math.min(SCRATCH_BYTES, end - at);
      const { bytesRead } = await this.fh.read(this.scratch, 0, want, at);
      if (!isZero(this.scratch.subarray(0, bytesRead))) return true;
    }
    return false;
  }
}

/**
 * The batch's range if the file holds no data in it, by one SEEK_DATA (a check per gap cost 70 ms
 * of a 2 GiB sparse migration's destination CPU). Undefined without the native module, or when
 * the range starts past the old end of the file (knownHoleFrom covers that).
 */
function emptyRange(fd: number, begin: BatchBegin, sizeBefore: number): { start: number; end: number } | undefined {
  const { start, end } = batchRange(begin);
  if (start >= Math.min(sizeBefore, end)) return undefined;
  return hasDataIn(fd, start, end) === false ? { start, end } : undefined;
}

/** Wait for every write; the first failure wins, but only after none is still running. */
async function settleAll(writes: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(writes);
  for (const r of results) if (r.status === "rejected") throw r.reason;
}

/**
 * The base of an incremental batch: the final file, read-only, beneath the held directory with no
 * symlink followed. Undefined when there is none or it is not a regular file (planning refused
 * anything but a regular file; one swapped in since is simply not used).
 */
export async function openBase(dir: DirHandle, name: string): Promise<FileHandle | undefined> {
  try {
    return await dir.openFile(name, { flags: constants.O_RDONLY });
  } catch (err) {
    if (err instanceof PathRefusedError || ["ENOENT", "ELOOP"].includes(errnoOf(err) ?? "")) return undefined;
    throw err;
  }
}

/** Creates `<name>.part` in the held directory, or opens the one an earlier batch made. */
async function openPart(dir: DirHandle, name: string): Promise<{ fh: FileHandle; created: boolean }> {
  const path = posix.join(dir.path, name);
  try {
    try {
      const flags = constants.O_RDWR | constants.O_CREAT | constants.O_EXCL;
      return { fh: await dir.openFile(name, { flags, mode: 0o640 }), created: true };
    } catch (err) {
      if (errnoOf(err) !== "EEXIST") throw err;
      return { fh: await dir.openFile(name, { flags: constants.O_RDWR }), created: false };
    }
  } catch (err) {
    if (err instanceof PathRefusedError) throw new PathOutsideRootError(path, "exists and is not a regular file");
    throw err;
  }
}
