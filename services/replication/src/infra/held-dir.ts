import { lstat, readdir } from "node:fs/promises";
import type { DirHandle } from "#native/index.js";

// What DirHandle does not offer, through the held fd: /proc/self/fd/<fd> is a magic link the
// kernel resolves to the open directory itself, not to a path string, so a directory renamed or
// swapped for a symlink after it was opened is still the one listed.

const at = (dir: DirHandle, name = ""): string => `/proc/self/fd/${dir.fd}${name === "" ? "" : `/${name}`}`;

/** The names in a held directory ([] when it cannot be read). */
export async function listDir(dir: DirHandle): Promise<string[]> {
  return readdir(at(dir)).catch(() => [] as string[]);
}

/** Modification time of `name` (one component, not followed if a symlink) in a held directory. */
export async function mtimeIn(dir: DirHandle, name: string): Promise<number | undefined> {
  if (name.includes("/") || name === ".." || name === "." || name === "") return undefined;
  return (await lstat(at(dir, name)).catch(() => undefined))?.mtimeMs;
}
