import { constants, open, type FileHandle } from "node:fs/promises";
import { zeroCopy } from "#native/index.js";
import { processSetting } from "./config.js";
import { DestinationWriteError } from "./errors.js";

/** fsync a directory so entries created, renamed or removed in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes all of `bytes` at `position`, looping over short writes. */
export async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    if (bytesWritten === 0) {
      throw new DestinationWriteError(
        `write at ${position + done} made no progress (${done} of ${bytes.length} bytes)`,
      );
    }
    done += bytesWritten;
  }
}

/**
 * Reads `into.length` bytes at `position`, looping over short reads; stops early only at the end
 * of the file. Resolves to the bytes read (less than `into.length`: the file ended there).
 */
export async function readAll(fh: FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/**
 * Writes at least this large go to the disk with O_DIRECT by default (openDirect's "large ones",
 * for the mover's segments and the restore's runs): smaller ones stay in the page cache, since an
 * allocating O_DIRECT write of a few pages waits for the disk under the inode lock.
 */
export const DIRECT_MIN_BYTES = 1024 * 1024;

/**
 * A second, write-only handle on `path` with O_DIRECT where the platform and file system have it
 * (Linux ext4/xfs; not tmpfs: undefined), read with DWCP_DIRECT_IO once per file: "off" none,
 * "on" for every aligned write (`everyAligned`), "auto" the large ones (DIRECT_MIN_BYTES; none
 * when `largestWriteBytes`, the largest write the caller will make, is smaller). O_DIRECT
 * writes need 4 KiB-aligned memory, offsets and lengths (native `zeroCopy.alignedBuffer`).
 */
export async function openDirect(
  path: string | FileHandle,
  largestWriteBytes = Number.POSITIVE_INFINITY,
): Promise<{ fh: FileHandle; everyAligned: boolean } | undefined> {
  const everyAligned = processSetting("directIo") === "on";
  // Under "auto" a file whose writes are all smaller than DIRECT_MIN_BYTES never uses the handle.
  if (!everyAligned && largestWriteBytes < DIRECT_MIN_BYTES) return undefined;
  const fh = await openWithDirect(path, constants.O_WRONLY);
  return fh === undefined ? undefined : { fh, everyAligned };
}

/**
 * A read-only O_DIRECT handle on `path`: its reads bypass the page cache, so they come from the
 * disk (what a read-back must check), and fill no cache with a volume nobody reads again.
 * Undefined where O_DIRECT is missing or refused (tmpfs) or DWCP_DIRECT_IO=off. Reads need
 * 4 KiB-aligned memory, offsets and lengths.
 */
export async function openDirectRead(path: string | FileHandle): Promise<FileHandle | undefined> {
  return openWithDirect(path, constants.O_RDONLY);
}

/**
 * `target` is a path (opened without following a final symlink) or an open handle, whose inode is
 * reopened through /proc/self/fd: no path is resolved again, so what was checked is what is opened.
 */
async function openWithDirect(target: string | FileHandle, access: number): Promise<FileHandle | undefined> {
  const flag = (constants as { O_DIRECT?: number }).O_DIRECT;
  if (flag === undefined || processSetting("directIo") === "off") return undefined;
  const [path, nofollow] =
    typeof target === "string" ? [target, constants.O_NOFOLLOW] : [`/proc/self/fd/${target.fd}`, 0];
  try {
    return await open(path, access | nofollow | flag);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === "EINVAL" || code === "EOPNOTSUPP") return undefined;
    throw err;
  }
}

/**
 * Writeback started early (sync_file_range WRITE on the libuv pool): a file's dirty pages start
 * going to disk as they are written, so its fsync waits only for the last few. Failures are left
 * to that fsync. `settled()` before the fsync and before closing the descriptor: a call still
 * running on a closed (and maybe reused) fd would start writeback of another file.
 */
export class EarlyWriteback {
  private readonly running = new Set<Promise<void>>();

  start(fd: number, offset: number, length: number): void {
    if (!zeroCopy.available) return;
    const p = zeroCopy.startWriteback(fd, offset, length).catch(() => undefined);
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
  }

  async settled(): Promise<void> {
    await Promise.all(this.running);
  }
}
