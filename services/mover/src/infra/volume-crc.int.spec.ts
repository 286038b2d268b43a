import { randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32c } from "../../../../native/index.js";
import { fileCrc32c } from "./volume-crc.js";

const MiB = 1024 * 1024;
let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "dwcp-volume-crc-"));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe("fileCrc32c", () => {
  // Extents that straddle the 8 MiB read blocks, holes between them, a data tail and a hole tail.
  it.each([
    { name: "sparse, data extents across block boundaries", size: 40 * MiB + 333, extents: [[0, 5 * MiB], [7 * MiB + 5, 12 * MiB], [30 * MiB, 40 * MiB + 333]] },
    { name: "dense", size: 17 * MiB + 1, extents: [[0, 17 * MiB + 1]] },
    { name: "all hole", size: 9 * MiB, extents: [] },
    { name: "empty", size: 0, extents: [] },
  ])("equals the CRC32C of the whole file: $name", async ({ size, extents }) => {
    const path = join(dir, `f-${size}`);
    const fh = await open(path, "w+");
    try {
      await fh.truncate(size);
      for (const [start = 0, end = 0] of extents) await fh.write(randomBytes(end - start), 0, end - start, start);
      expect(await fileCrc32c(fh, size)).toBe(crc32c(await readFile(path)) >>> 0);
    } finally {
      await fh.close();
    }
  });
});
