import { spawnSync } from "node:child_process";
import type { FileHandle } from "node:fs/promises";
import { zeroCopy } from "#native/index.js";

/**
 * Bytes of a file in the page cache, as fincore(1) (util-linux: mincore or cachestat) sees them:
 * an observer independent of the native module under test.
 */
export function residentBytes(path: string): number {
  const r = spawnSync("fincore", ["--bytes", "--noheadings", "--output", "RES", path], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`fincore failed: ${r.stderr || String(r.error)}`);
  return Number(r.stdout.trim());
}

/**
 * Drops a file's pages from the page cache (fdatasync, then fadvise DONTNEED) until fincore sees
 * none, at most `tries` times, and returns the bytes still cached. Whether pages leave is the
 * kernel's call (DONTNEED is advice): a test that needs an uncached file skips when this is not 0.
 * Needs the native module (fadvise).
 */
export async function evict(fh: FileHandle, path: string, tries = 20): Promise<number> {
  let resident = residentBytes(path);
  for (let i = 0; resident !== 0 && i < tries; i++) {
    await fh.datasync();
    zeroCopy.fadvise(fh.fd, 0, 0, "dontneed");
    resident = residentBytes(path);
  }
  return resident;
}
