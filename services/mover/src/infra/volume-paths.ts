import { lstat, realpath, stat, type FileHandle } from "node:fs/promises";
import { posix } from "node:path";
import { ConfigError } from "#common/errors.js";
import { openRootDir, PathRefusedError, type DirHandle, type EntryStat, type OpenFileOptions } from "#native/index.js";
import { lexicalConfine, rootOf } from "../domain/paths.js";
import { PathNotFoundError, PathOutsideRootError } from "../errors.js";

/**
 * File-system half of path confinement. Every path a peer or the coordinator names goes through
 * confine(): lexical rules first (domain/paths.ts), then realpath, then the same root check on
 * the canonical result; that names the file. Nothing is then opened by that name: each root is
 * held open by fd for the process's lifetime (holdRoots), and files are opened, created, renamed
 * and removed beneath it with no symlink followed (native DirHandle: openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS). A component swapped for a symlink after the check is refused, not followed.
 */

/** Root directories held open by fd, by canonical path, with how many holders each has. */
const held = new Map<string, { dir: DirHandle; refs: number }>();

/**
 * Holds each canonical root open by fd until as many releaseRoots as holdRoots (resolveRoots
 * holds them: the mover and its data server for their lifetimes). A root used without being held
 * (a caller that never resolved its roots) is held for the rest of the process.
 */
export function holdRoots(roots: readonly string[]): void {
  for (const root of new Set(roots)) {
    const h = held.get(root);
    if (h !== undefined) h.refs++;
    else held.set(root, { dir: openRootDir(root), refs: 1 });
  }
}

/** Lets go of roots held by holdRoots or resolveRoots; the last holder closes the fd. */
export function releaseRoots(roots: readonly string[]): void {
  for (const root of new Set(roots)) {
    const h = held.get(root);
    if (h === undefined || --h.refs > 0) continue;
    held.delete(root);
    h.dir.close();
  }
}

/** Every root this process holds: for code that works on canonical paths under any of them. */
export function heldRoots(): string[] {
  return [...held.keys()];
}

/** The held root containing canonical path `p` (the deepest) and `p` relative to it. */
function beneath(roots: readonly string[], p: string): { root: DirHandle; rel: string } {
  const root = [...roots].sort((a, b) => b.length - a.length).find((r) => rootOf([r], p) !== undefined);
  if (root !== undefined && !held.has(root)) holdRoots([root]);
  const dir = root === undefined ? undefined : held.get(root)?.dir;
  if (root === undefined || dir === undefined) throw new PathOutsideRootError(p, "is outside every root");
  return { root: dir, rel: posix.relative(root, p) };
}

/** A refusal from beneath a held root as this service's error; other failures pass through. */
function confined(p: string, err: unknown): unknown {
  if (!(err instanceof PathRefusedError) || err.refusal === "not-a-file") return err;
  return new PathOutsideRootError(p, `was refused when opened beneath its root: ${err.message}`, { cause: err });
}

/**
 * Opens the file at canonical path `p` (from confine) beneath its held root. A symlink or `..`
 * on the way is PathOutsideRootError; something other than a regular file is PathRefusedError
 * "not-a-file"; a missing one has errno ENOENT.
 */
export async function openConfined(
  roots: readonly string[],
  p: string,
  opts: OpenFileOptions = {},
): Promise<FileHandle> {
  const { root, rel } = beneath(roots, p);
  try {
    return await root.openFile(rel, opts);
  } catch (err) {
    throw confined(p, err);
  }
}

/** Opens the directory at canonical path `p` beneath its held root (close it when done). */
export function openDirConfined(roots: readonly string[], p: string): DirHandle {
  const { root, rel } = beneath(roots, p);
  try {
    return root.openDir(rel);
  } catch (err) {
    throw confined(p, err);
  }
}

/**
 * mkdir -p of canonical directory `p` beneath its held root, one component at a time from held
 * fds (each new directory's parent fsynced). Returns the directory, held, and whether it created any.
 */
export async function makeDirConfined(
  roots: readonly string[],
  p: string,
): Promise<{ dir: DirHandle; created: boolean }> {
  const { root, rel } = beneath(roots, p);
  try {
    return await root.makeDirs(rel);
  } catch (err) {
    throw confined(p, err);
  }
}

/** Runs `fn` with the parent directory of canonical path `p`, held, and `p`'s last component. */
export async function inParentConfined<T>(
  roots: readonly string[],
  p: string,
  fn: (dir: DirHandle, name: string) => T | Promise<T>,
): Promise<T> {
  const dir = openDirConfined(roots, posix.dirname(p));
  try {
    return await fn(dir, posix.basename(p));
  } finally {
    dir.close();
  }
}

/** What is at canonical path `p` (not following a symlink), or undefined when nothing is (or no parent). */
export async function statConfined(roots: readonly string[], p: string): Promise<EntryStat | undefined> {
  try {
    return await inParentConfined(roots, p, (dir, name) => dir.stat(name));
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return undefined;
    throw err;
  }
}

/** errno name of a Node fs error, or of a native SyscallError (its `sysCode`). */
export function errnoOf(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const fields = err as Error & { code?: unknown; sysCode?: unknown };
  const code = typeof fields.sysCode === "string" ? fields.sysCode : fields.code;
  return typeof code === "string" ? code : undefined;
}

/** Canonical (realpath) form of each root, held open (releaseRoots); each must exist and be a directory. */
export async function resolveRoots(dirs: readonly string[]): Promise<string[]> {
  const problems: string[] = [];
  const roots: string[] = [];
  if (dirs.length === 0) problems.push("at least one --root directory is required");
  for (const dir of dirs) {
    try {
      const real = await realpath(dir);
      if ((await stat(real)).isDirectory()) roots.push(real);
      else problems.push(`--root ${JSON.stringify(dir)} is not a directory`);
    } catch (err) {
      problems.push(`--root ${JSON.stringify(dir)} is not usable: ${errnoOf(err) ?? String(err)}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  holdRoots(roots);
  return roots;
}

/**
 * Where a refused path really led stays out of the error's message, which becomes a refusal in
 * the event log that every reader of events sees: the message names the path as it was asked for,
 * and the canonical path (a host path outside every root) is only in the cause, for logs.
 */
function assertInside(roots: readonly string[], real: string, asked: string): void {
  if (rootOf(roots, real) === undefined) {
    throw new PathOutsideRootError(asked, "resolves outside every root", { cause: { canonicalPath: real } });
  }
}

/** What is at `p` itself, without following a final symlink. */
async function entryKind(p: string): Promise<"missing" | "symlink" | "other"> {
  try {
    return (await lstat(p)).isSymbolicLink() ? "symlink" : "other";
  } catch {
    return "missing";
  }
}

/**
 * Canonical path of `p` inside one of `roots` (which must be canonical, see resolveRoots).
 * Relative paths resolve against the first root. With `mustExist: false` the path may not exist
 * yet: its nearest existing ancestor is resolved and must be inside a root, and the missing
 * components are appended. Throws PathOutsideRootError or PathNotFoundError.
 */
export async function confine(roots: readonly string[], p: string, opts: { mustExist: boolean }): Promise<string> {
  const lexical = lexicalConfine(roots, p);
  if (!lexical.ok) throw new PathOutsideRootError(p, lexical.reason);
  const missing: string[] = [];
  let probe = lexical.path;
  let raced = 0;
  for (;;) {
    try {
      const real = await realpath(probe);
      assertInside(roots, real, p);
      return missing.length === 0 ? real : posix.join(real, ...missing.reverse());
    } catch (err) {
      if (errnoOf(err) !== "ENOENT") throw err;
      if (opts.mustExist) throw new PathNotFoundError(p, { cause: err });
      const kind = await entryKind(probe);
      if (kind === "symlink") throw new PathOutsideRootError(p, "goes through a dangling symlink", { cause: err });
      // Created between realpath and lstat (another batch making the same directory): resolve again.
      if (kind === "other" && raced++ < 3) continue;
      if (probe === lexical.root) throw new PathNotFoundError(lexical.root, { cause: err });
      missing.push(posix.basename(probe));
      probe = posix.dirname(probe);
    }
  }
}

export { fsyncDir } from "#common/fs.js";
