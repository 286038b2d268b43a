import { posix } from "node:path";

/**
 * Lexical half of path confinement: no file system access. The infra half resolves symlinks
 * (realpath) and checks the result again; both must pass.
 */
export type LexicalPath = { ok: true; path: string; root: string } | { ok: false; reason: string };

const MAX_PATH = 4096;
const MAX_NAME_BYTES = 255;

/** `p` equals `root` or lies below it. Both must be normalized absolute paths. */
export function isInsideRoot(root: string, p: string): boolean {
  if (p === root) return true;
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return p.startsWith(prefix);
}

/** The first root containing `p`, if any. */
export function rootOf(roots: readonly string[], p: string): string | undefined {
  return roots.find((root) => isInsideRoot(root, p));
}

/**
 * Normalize `p` and check it lies inside a root. Relative paths resolve against the first
 * root. Any `..` segment is refused outright, even one that would stay inside: under a symlink
 * the kernel's `a/..` and the lexical one differ, so the safe answer is not to guess.
 */
export function lexicalConfine(roots: readonly string[], p: string): LexicalPath {
  const first = roots[0];
  if (first === undefined) return { ok: false, reason: "has no root to resolve against (no --root configured)" };
  if (p.length === 0) return { ok: false, reason: "is empty" };
  if (p.length > MAX_PATH) return { ok: false, reason: `is longer than ${MAX_PATH} characters` };
  if (p.includes("\0")) return { ok: false, reason: "contains a NUL byte" };
  if (p.split("/").includes("..")) return { ok: false, reason: "must not contain '..' segments" };
  const absolute = posix.resolve(first, p);
  const root = rootOf(roots, absolute);
  if (root === undefined) {
    return { ok: false, reason: `is outside every root (${roots.join(", ")})` };
  }
  return { ok: true, path: absolute, root };
}

/** Why `name` is not a plain file name, or undefined if it is one. */
export function basenameProblem(name: string): string | undefined {
  if (name.length === 0) return "is empty";
  if (name === "." || name === "..") return "is not a file name";
  if (name.includes("/")) return "must be a plain file name without '/'";
  if (name.includes("\0")) return "contains a NUL byte";
  if (new TextEncoder().encode(name).length > MAX_NAME_BYTES) return `is longer than ${MAX_NAME_BYTES} bytes`;
  return undefined;
}

export const PART_SUFFIX = ".part";

/** Name of the file a volume is written to until finalize renames it. */
export function partName(destName: string): string {
  return destName + PART_SUFFIX;
}

/** Names that appear more than once, in first-seen order. */
export function duplicates(names: readonly string[]): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const n of names) (seen.has(n) ? dup : seen).add(n);
  return [...dup];
}
