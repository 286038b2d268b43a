import { randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32c, zeroCopy } from "#native/index.js";
import { openDirectRead } from "#common/fs.js";
import { evict, residentBytes } from "../../../../test/support/page-cache.js";
import { diskCrc32c, rangeCrc32c } from "./volume-crc.js";

const MiB = 1024 * 1024;
let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "dwcp-volume-crc-"));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe("rangeCrc32c over a whole file", () => {
  // Extents that straddle the 8 MiB read blocks, holes between them, a data tail and a hole tail.
  it.each([
    {
      name: "sparse, data extents across block boundaries",
      size: 40 * MiB + 333,
      extents: [
        [0, 5 * MiB],
        [7 * MiB + 5, 12 * MiB],
        [30 * MiB, 40 * MiB + 333],
      ],
    },
    { name: "dense", size: 17 * MiB + 1, extents: [[0, 17 * MiB + 1]] },
    { name: "all hole", size: 9 * MiB, extents: [] },
    { name: "empty", size: 0, extents: [] },
  ])("equals the CRC32C of the whole file: $name", async ({ size, extents }) => {
    const path = join(dir, `f-${size}`);
    const fh = await open(path, "w+");
    try {
      await fh.truncate(size);
      for (const [start = 0, end = 0] of extents) await fh.write(randomBytes(end - start), 0, end - start, start);
      expect(await rangeCrc32c(fh, 0, size)).toBe(crc32c(await readFile(path)) >>> 0);
    } finally {
      await fh.close();
    }
  });
});

describe("rangeCrc32c with an O_DIRECT handle", () => {
  const size = 13 * MiB + 777; // an unaligned tail
  let path = "";
  let whole = Buffer.alloc(0);
  beforeAll(async () => {
    path = join(dir, "direct.img");
    const fh = await open(path, "w+");
    try {
      await fh.truncate(size);
      for (const [start, end] of [
        [0, 3 * MiB + 100],
        [6 * MiB, size],
      ] as const)
        await fh.write(randomBytes(end - start), 0, end - start, start);
      await fh.sync();
    } finally {
      await fh.close();
    }
    whole = await readFile(path);
  });

  async function withHandles(f: (fh: FileHandle, direct: FileHandle | undefined) => Promise<void>): Promise<void> {
    const fh = await open(path, "r");
    const direct = await openDirectRead(path);
    try {
      await f(fh, direct);
    } finally {
      await direct?.close();
      await fh.close();
    }
  }

  it("equals the buffered result for aligned and unaligned ranges", async () => {
    await withHandles(async (fh, direct) => {
      for (const [start, end] of [
        [0, size],
        [4 * MiB, 12 * MiB],
        [MiB, size],
        [12 * MiB, size],
      ] as const) {
        const expected = crc32c(whole.subarray(start, end)) >>> 0;
        expect(await rangeCrc32c(fh, start, end), `buffered [${start}, ${end})`).toBe(expected);
        expect(await rangeCrc32c(fh, start, end, direct), `direct [${start}, ${end})`).toBe(expected);
      }
    });
  });

  it("reads from the disk: nothing lands in the page cache", async (ctx) => {
    await withHandles(async (fh, direct) => {
      if (direct === undefined || !zeroCopy.available)
        return ctx.skip("no O_DIRECT here (tmpfs) or no aligned buffers");
      const resident = await evict(fh, path);
      if (resident !== 0) return ctx.skip(`${resident} bytes stayed cached after 20 evictions`);
      expect(await diskCrc32c(fh, path, 0, size)).toBe(crc32c(whole) >>> 0);
      expect(residentBytes(path), "read from the disk, not through the cache").toBe(0);
    });
  });
});
