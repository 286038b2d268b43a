import { lstat, mkdir, realpath, stat, unlink } from "node:fs/promises";
import { posix } from "node:path";
import { ConfigError } from "#common/errors.js";
import { lexicalConfine, rootOf } from "../domain/paths.js";
import { PathNotFoundError, PathOutsideRootError } from "../errors.js";

/**
 * File-system half of path confinement. Every path a peer or the coordinator names goes through
 * confine(): lexical rules first (domain/paths.ts), then realpath, then the same root check on
 * the canonical result, so a symlink cannot lead out of a root.
 */

/** errno name of a Node fs error, or of a native SyscallError (its `sysCode`). */
export function errnoOf(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const fields = err as Error & { code?: unknown; sysCode?: unknown };
  const code = typeof fields.sysCode === "string" ? fields.sysCode : fields.code;
  return typeof code === "string" ? code : undefined;
}

/** Removes a file; one that is already gone is not an error. */
export async function removeIfPresent(path: string): Promise<void> {
  await unlink(path).catch((err: unknown) => {
    if (errnoOf(err) !== "ENOENT") throw err;
  });
}

/** Canonical (realpath) form of each root; each must exist and be a directory. */
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

/**
 * mkdir -p for a path confine() returned, one component at a time, re-checking each created or
 * found directory with realpath so a symlink planted on the way cannot lead out of the root.
 * Returns the directories it created, parents first (their parents need an fsync for the new
 * entries to be durable).
 */
export async function ensureDirInside(roots: readonly string[], dir: string): Promise<string[]> {
  const root = rootOf(roots, dir);
  if (root === undefined) throw new PathOutsideRootError(dir, "is outside every root");
  const created: string[] = [];
  const parts = posix
    .relative(root, dir)
    .split("/")
    .filter((s) => s.length > 0);
  let current = root;
  for (const part of parts) {
    const next = posix.join(current, part);
    try {
      await mkdir(next);
      created.push(next);
    } catch (err) {
      if (errnoOf(err) !== "EEXIST") throw err;
    }
    const real = await realpath(next);
    assertInside(roots, real, dir);
    if (!(await stat(real)).isDirectory()) throw new PathOutsideRootError(dir, `has a non-directory at ${next}`);
    current = real;
  }
  return created;
}

export { fsyncDir } from "#common/fs.js";
