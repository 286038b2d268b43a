// Files and directories opened beneath a held directory fd (DirHandle), never by re-resolving a
// path string: what was checked is what gets opened, created, renamed or removed. No symlink is
// followed anywhere below the held directory and no path may leave it.
//
// Three implementations with the same semantics, chosen once per process:
//   openat2 - native, openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) in one call (Linux 5.6+)
//   walk    - native, one openat(O_NOFOLLOW | O_DIRECTORY) per component (older kernels)
//   proc    - no native module: the same walk in Node through /proc/self/fd/<dirfd>/<name>,
//             which the kernel resolves from the held fd (a magic link), not from a path string.
//             It needs /proc mounted, and a no-clobber rename is link() + unlink() (files only).
// Arguments are validated here; C++ trusts them.
import { closeSync, constants, fsync, fstatSync, linkSync, lstatSync, mkdirSync, openSync } from "node:fs";
import { existsSync, renameSync, rmdirSync, unlinkSync, type Stats } from "node:fs";
import { open as openHandle, type FileHandle } from "node:fs/promises";
import { posix } from "node:path";
import { promisify } from "node:util";
import { InvalidArgumentError, mapNativeError, NativeError, type NativeErrorOptions } from "./errors.js";
import type { NativeBinding } from "./loader.js";

export type EntryKind = "file" | "directory" | "symlink" | "other";

/** What is at a name inside a directory, without following a symlink. */
export interface EntryStat {
  kind: EntryKind;
  size: number;
  /** Inode number (exact below 2^53). */
  ino: number;
}

export type BeneathImpl = "openat2" | "walk" | "proc";

/** Why a path was refused before anything was opened, or by the kernel while resolving it. */
export type PathRefusal = "symlink" | "escapes" | "invalid" | "not-a-file" | "not-a-directory";

/**
 * A path under a held directory was refused: it names a symlink or goes through one, leaves the
 * directory (absolute, `..`), is malformed, or names something of the wrong kind.
 */
export class PathRefusedError extends NativeError {
  readonly code = "PATH_REFUSED";
  readonly retryable = false;
  constructor(
    readonly refusal: PathRefusal,
    message: string,
    options: NativeErrorOptions = {},
  ) {
    super(message, options);
  }
}

/** No way to open beneath a held fd here: no native module and no /proc. */
export class BeneathUnavailableError extends NativeError {
  readonly code = "BENEATH_UNAVAILABLE";
  readonly retryable = false;
}

/** The calls each implementation provides; arguments already validated. */
export interface BeneathOps {
  readonly impl: BeneathImpl;
  open(dirfd: number, path: string, flags: number, mode: number): number;
  mkdir(dirfd: number, name: string, mode: number): boolean;
  rename(fromDir: number, from: string, toDir: number, to: string, noReplace: boolean): void;
  unlink(dirfd: number, name: string, isDir: boolean): void;
  stat(dirfd: number, name: string): EntryStat | undefined;
}

const MAX_PATH = 4096;
const MAX_NAME_BYTES = 255;

function nameProblem(name: string): string | undefined {
  if (name.length === 0) return "has an empty component";
  if (name === "." || name === "..") return `has a "${name}" component`;
  if (name.includes("\0")) return "contains a NUL byte";
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `has a component longer than ${MAX_NAME_BYTES} bytes`;
  return undefined;
}

/** A relative path of plain components ("" is the directory itself). */
function assertRelative(path: unknown): string {
  if (typeof path !== "string") throw new InvalidArgumentError(`path must be a string, got ${typeof path}`);
  if (path === "") return ".";
  if (path.startsWith("/")) throw new PathRefusedError("escapes", `${JSON.stringify(path)} is absolute`);
  if (path.length > MAX_PATH) throw new PathRefusedError("invalid", `path is longer than ${MAX_PATH} characters`);
  for (const part of path.split("/")) {
    const problem = nameProblem(part);
    if (problem === undefined) continue;
    const refusal = part === ".." ? "escapes" : "invalid";
    throw new PathRefusedError(refusal, `${JSON.stringify(path)} ${problem}`);
  }
  return path;
}

/** One plain component. */
function assertName(name: unknown): string {
  if (typeof name !== "string") throw new InvalidArgumentError(`name must be a string, got ${typeof name}`);
  const problem = name.includes("/") ? "contains '/'" : nameProblem(name);
  if (problem !== undefined)
    throw new PathRefusedError(name === ".." ? "escapes" : "invalid", `${JSON.stringify(name)} ${problem}`);
  return name;
}

function assertMode(mode: unknown): number {
  if (typeof mode !== "number" || !Number.isInteger(mode) || mode < 0 || mode > 0o7777)
    throw new InvalidArgumentError(`mode must be a permission mode (0..0o7777), got ${String(mode)}`);
  return mode;
}

/** ELOOP: a symlink was met (NO_SYMLINKS, O_NOFOLLOW); EXDEV: the resolution left the directory. */
function mapPathError(err: unknown, what: string): Error {
  const code = (err as { code?: unknown; sysCode?: unknown }).sysCode ?? (err as { code?: unknown }).code;
  if (code === "ELOOP") return new PathRefusedError("symlink", `${what} is or goes through a symlink`, { cause: err });
  if (code === "EXDEV") return new PathRefusedError("escapes", `${what} leaves its directory`, { cause: err });
  return mapNativeError(normalizeNodeError(err));
}

/** Node fs errors carry a negative errno; the native mapper expects the positive one. */
function normalizeNodeError(err: unknown): unknown {
  const e = err as { code?: unknown; errno?: unknown; syscall?: unknown; message?: unknown };
  if (typeof e.errno === "number" && e.errno < 0 && typeof e.code === "string") {
    const message = typeof e.message === "string" ? e.message : e.code;
    return Object.assign(new Error(`${String(e.syscall)}: ${message}`), {
      code: e.code,
      errno: -e.errno,
      syscall: e.syscall,
    });
  }
  return err;
}

export function nativeOps(b: NativeBinding, walk: boolean): BeneathOps {
  return {
    impl: walk ? "walk" : "openat2",
    open: (dirfd, path, flags, mode) => b.openBeneath(dirfd, path, flags, mode, walk),
    mkdir: (dirfd, name, mode) => b.mkdirAt(dirfd, name, mode),
    rename: (fromDir, from, toDir, to, noReplace) => b.renameAt(fromDir, from, toDir, to, noReplace),
    unlink: (dirfd, name, isDir) => b.unlinkAt(dirfd, name, isDir),
    stat: (dirfd, name) => b.statAt(dirfd, name),
  };
}

const fsyncAsync = promisify(fsync);

const proc = (fd: number, name: string): string => `/proc/self/fd/${fd}/${name}`;

function kindOf(st: Stats): EntryKind {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "directory";
  if (st.isSymbolicLink()) return "symlink";
  return "other";
}

/** With O_DIRECTORY the kernel answers ENOTDIR, not ELOOP, for a symlink: say which it was. */
function openDirNoFollow(dirfd: number, name: string): number {
  try {
    return openSync(proc(dirfd, name), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOTDIR" && isSymlink(dirfd, name))
      throw Object.assign(new Error(`open: ${proc(dirfd, name)} is a symlink`), { code: "ELOOP" });
    throw err;
  }
}

function isSymlink(dirfd: number, name: string): boolean {
  try {
    return lstatSync(proc(dirfd, name)).isSymbolicLink();
  } catch {
    return false;
  }
}

/** The walk in Node: /proc/self/fd/<fd>/<name> resolves <name> in the directory the fd holds. */
export const procOps: BeneathOps = {
  impl: "proc",
  open(dirfd, path, flags, mode) {
    const parts = path.split("/");
    const last = parts.pop() ?? ".";
    let cur = dirfd;
    try {
      for (const part of parts) {
        const next = openDirNoFollow(cur, part);
        if (cur !== dirfd) closeSync(cur);
        cur = next;
      }
      // "." is the held directory itself: /proc/self/fd/<fd>/. must not be refused as a link.
      if (last === ".") return openSync(proc(cur, last), flags, mode);
      if ((flags & constants.O_DIRECTORY) !== 0) return openDirNoFollow(cur, last);
      return openSync(proc(cur, last), flags | constants.O_NOFOLLOW, mode);
    } finally {
      if (cur !== dirfd) closeSync(cur);
    }
  },
  mkdir(dirfd, name, mode) {
    try {
      mkdirSync(proc(dirfd, name), mode);
      return true;
    } catch (err) {
      if ((err as { code?: unknown }).code === "EEXIST") return false;
      throw err;
    }
  },
  rename(fromDir, from, toDir, to, noReplace) {
    if (!noReplace) return renameSync(proc(fromDir, from), proc(toDir, to));
    // No renameat2 in Node: link() fails with EEXIST instead of replacing, then drop the old name.
    linkSync(proc(fromDir, from), proc(toDir, to));
    unlinkSync(proc(fromDir, from));
  },
  unlink(dirfd, name, isDir) {
    (isDir ? rmdirSync : unlinkSync)(proc(dirfd, name));
  },
  stat(dirfd, name) {
    try {
      const st = lstatSync(proc(dirfd, name));
      return { kind: kindOf(st), size: st.size, ino: st.ino };
    } catch (err) {
      if ((err as { code?: unknown }).code === "ENOENT") return undefined;
      throw err;
    }
  },
};

const unavailable = (): never => {
  throw new BeneathUnavailableError("no native module and no /proc/self/fd: cannot open paths beneath a held fd");
};

export const unavailableOps: BeneathOps = {
  impl: "proc",
  open: unavailable,
  mkdir: unavailable,
  rename: unavailable,
  unlink: unavailable,
  stat: unavailable,
};

/** The ops without a native module: the /proc walk if /proc is there. */
export function fallbackOps(): BeneathOps {
  return existsSync("/proc/self/fd") ? procOps : unavailableOps;
}

/** Flags a file open may carry; others (O_DIRECTORY, O_PATH, O_TMPFILE, ...) are not for files. */
const FILE_FLAGS =
  constants.O_RDONLY |
  constants.O_WRONLY |
  constants.O_RDWR |
  constants.O_CREAT |
  constants.O_EXCL |
  constants.O_TRUNC |
  constants.O_APPEND;

/** Flags the /proc reopen keeps: access mode and append; the rest applied to the first open. */
const REOPEN_FLAGS = constants.O_RDONLY | constants.O_WRONLY | constants.O_RDWR | constants.O_APPEND;

export interface OpenFileOptions {
  /** O_RDONLY (default), O_WRONLY or O_RDWR, with O_CREAT, O_EXCL, O_TRUNC, O_APPEND. */
  flags?: number;
  /** Permissions of a created file; default 0o640. */
  mode?: number;
}

/**
 * A directory held open by fd. Every path given to its methods is relative to it and resolved
 * by the kernel from the fd; a symlink anywhere in it is refused (PathRefusedError "symlink"),
 * as is `..` or an absolute path ("escapes"). `path` is where it was when opened, for messages
 * and logs only: nothing is ever opened through it.
 */
export class DirHandle {
  private closed = false;

  private constructor(
    private readonly ops: BeneathOps,
    readonly fd: number,
    readonly path: string,
  ) {}

  /**
   * Opens a directory the operator configured (a root). Symlinks in `dir` itself are followed:
   * the root is trusted; confinement starts beneath it.
   */
  static openRoot(dir: string, ops: BeneathOps): DirHandle {
    if (typeof dir !== "string" || !dir.startsWith("/"))
      throw new InvalidArgumentError(`a root must be an absolute path, got ${JSON.stringify(dir)}`);
    let fd: number;
    try {
      fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch (err) {
      throw mapPathError(err, JSON.stringify(dir));
    }
    return new DirHandle(ops, fd, dir);
  }

  /** Which implementation resolves paths under this handle. */
  get impl(): BeneathImpl {
    return this.ops.impl;
  }

  private display(rel: string): string {
    return rel === "." ? this.path : posix.join(this.path, rel);
  }

  /**
   * Opens a regular file beneath this directory as a FileHandle. It is opened without following
   * any symlink, fstat'ed (anything but a regular file is refused: "not-a-file"; a FIFO cannot
   * block the open, which is non-blocking), then reopened through /proc/self/fd/<fd> for a
   * FileHandle of the same open inode. Missing: an error whose sysCode is ENOENT.
   */
  async openFile(rel: string, opts: OpenFileOptions = {}): Promise<FileHandle> {
    const path = assertRelative(rel);
    const flags = opts.flags ?? constants.O_RDONLY;
    if ((flags & ~FILE_FLAGS) !== 0) throw new InvalidArgumentError(`flags ${flags} are not file-open flags`);
    const mode = assertMode(opts.mode ?? 0o640);
    const fd = this.call(rel, () => this.ops.open(this.fd, path, flags | constants.O_NONBLOCK, mode));
    try {
      if (!fstatSync(fd).isFile())
        throw new PathRefusedError("not-a-file", `${this.display(path)} is not a regular file`);
      return await openHandle(`/proc/self/fd/${fd}`, flags & REOPEN_FLAGS);
    } finally {
      closeSync(fd);
    }
  }

  /** Opens a directory beneath this one ("" is this one again, as a new handle). */
  openDir(rel: string): DirHandle {
    const path = assertRelative(rel);
    const fd = this.call(rel, () => this.ops.open(this.fd, path, constants.O_RDONLY | constants.O_DIRECTORY, 0));
    return new DirHandle(this.ops, fd, this.display(path));
  }

  /**
   * mkdir -p beneath this directory, one component at a time from held fds. Each directory it
   * creates has its parent fsynced (the new entry survives a crash); `created` says whether any was.
   */
  async makeDirs(rel: string, mode = 0o750): Promise<{ dir: DirHandle; created: boolean }> {
    const path = assertRelative(rel);
    assertMode(mode);
    let dir = this.openDir("");
    let created = false;
    try {
      for (const part of path === "." ? [] : path.split("/")) {
        const made = this.call(rel, () => this.ops.mkdir(dir.fd, part, mode));
        if (made) await dir.sync();
        created ||= made;
        const next = dir.openDir(part);
        dir.close();
        dir = next;
      }
      return { dir, created };
    } catch (err) {
      dir.close();
      throw err;
    }
  }

  /** What `name` (one component) is, without following a symlink; undefined if nothing. */
  stat(name: string): EntryStat | undefined {
    const n = assertName(name);
    return this.call(name, () => this.ops.stat(this.fd, n));
  }

  /**
   * Renames `from` in this directory to `to` in `toDir` (default: this one). With `noReplace`
   * an existing `to` is not replaced: the call fails with sysCode EEXIST.
   */
  rename(from: string, to: string, opts: { toDir?: DirHandle; noReplace?: boolean } = {}): void {
    const [f, t] = [assertName(from), assertName(to)];
    const toDir = opts.toDir ?? this;
    this.call(from, () => this.ops.rename(this.fd, f, toDir.fd, t, opts.noReplace ?? false));
  }

  /** Removes the file `name`; `ignoreMissing` makes an absent one not an error. */
  unlink(name: string, opts: { ignoreMissing?: boolean } = {}): void {
    this.remove(name, false, opts.ignoreMissing ?? false);
  }

  /** Removes the empty directory `name`. */
  rmdir(name: string, opts: { ignoreMissing?: boolean } = {}): void {
    this.remove(name, true, opts.ignoreMissing ?? false);
  }

  /** fsync the directory: entries created, renamed or removed in it survive a crash. */
  async sync(): Promise<void> {
    if (this.closed) throw new InvalidArgumentError(`${this.path} is closed`);
    await fsyncAsync(this.fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }

  private remove(name: string, isDir: boolean, ignoreMissing: boolean): void {
    const n = assertName(name);
    try {
      this.call(name, () => this.ops.unlink(this.fd, n, isDir));
    } catch (err) {
      if (ignoreMissing && (err as { sysCode?: unknown }).sysCode === "ENOENT") return;
      throw err;
    }
  }

  private call<T>(rel: string, fn: () => T): T {
    if (this.closed) throw new InvalidArgumentError(`${this.path} is closed`);
    try {
      return fn();
    } catch (err) {
      throw mapPathError(err, this.display(rel));
    }
  }
}
