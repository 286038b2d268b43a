// Paths by handle, against a real race: a python3 process swaps a file (or a directory) inside a
// mover's root with a symlink to one outside it (renameat2 RENAME_EXCHANGE, as fast as it can)
// while the mover opens sources and creates `.part` files. Nothing outside the root is ever read
// or created, and every refused open is a typed error.
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, realpath, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PathOutsideRootError } from "../../services/mover/src/errors.js";
import { SourceVolume } from "../../services/mover/src/infra/data-channel/source-volume.js";
import { startDataServer, type DataServer } from "../../services/mover/src/infra/data-channel/server.js";
import { batchOptions, MiB, silentLog, tempDir } from "#test/support/data-channel.js";
import { startSwapper, stopSwapper } from "#test/support/swapper.js";

const SIZE = MiB + 4096;
const INSIDE = 0x49; // "I"
const SECRET = 0x53; // "S"

let work: string;
let root: string;
let outside: string;
let server: DataServer;
const secret = randomBytes(32);

beforeAll(async () => {
  work = await realpath(await tempDir("sec-paths"));
  [root, outside] = [join(work, "root"), join(work, "outside")];
  await mkdir(join(root, "vms"), { recursive: true });
  await mkdir(join(outside, "evil"), { recursive: true });
  await writeFile(join(root, "vms", "disk.img"), Buffer.alloc(SIZE, INSIDE));
  await writeFile(join(outside, "secret.img"), Buffer.alloc(SIZE, SECRET));
  await symlink(join(outside, "secret.img"), join(root, "vms", "swap"));
  server = await startDataServer({
    host: "h",
    listenHost: "127.0.0.1",
    listenPort: 0,
    secret,
    roots: [root],
    log: silentLog,
  });
});

afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

describe("a source swapped for a symlink to a file outside the root", () => {
  const source = (): string => join(root, "vms", "disk.img");

  it("is what a path-based open leaks (the race is live)", async () => {
    const swapper = await startSwapper(source(), join(root, "vms", "swap"));
    try {
      let leaked = false;
      for (let i = 0; i < 5000 && !leaked; i++) {
        const fh = await open(source(), "r");
        const buf = Buffer.alloc(1);
        await fh.read(buf, 0, 1, 0);
        await fh.close();
        leaked = buf[0] === SECRET;
      }
      expect(leaked).toBe(true);
    } finally {
      await stopSwapper(swapper);
    }
  });

  it("is never read by the mover's source reads and local migrations: an open reads inside or is refused", async () => {
    const swapper = await startSwapper(source(), join(root, "vms", "swap"));
    const outcomes = { read: 0, refused: 0 };
    try {
      const buf = Buffer.alloc(SIZE);
      for (let i = 0; i < 400; i++) {
        try {
          const v = await SourceVolume.open(source(), SIZE, [root]);
          try {
            const chunk = await v.prepare(0, SIZE, buf);
            expect(chunk.data?.every((b) => b === INSIDE)).toBe(true);
            outcomes.read++;
          } finally {
            await v.close();
          }
        } catch (err) {
          expect(err).toBeInstanceOf(PathOutsideRootError);
          expect((err as Error).message).toMatch(/symlink/);
          outcomes.refused++;
        }
      }
      for (let i = 0; i < 20; i++) {
        const o = { address: server.address, secret, sourceHost: "h", migrationId: `m${i}`, volumeSizeBytes: SIZE };
        const batch = batchOptions(
          { ...o, sourcePath: source() },
          { sourceRoots: [root], destDir: "copies", destName: `v${i}` },
        );
        const done = await server.copyLocal(batch).catch((err: unknown) => err);
        if (done instanceof Error) {
          expect(done).toBeInstanceOf(PathOutsideRootError);
          outcomes.refused++;
        } else {
          const copied = await readFile(join(root, "copies", `v${i}.part`));
          expect(copied.every((b) => b === INSIDE)).toBe(true);
          outcomes.read++;
        }
      }
    } finally {
      await stopSwapper(swapper);
    }
    expect(outcomes.read + outcomes.refused).toBe(420);
    expect(outcomes.refused).toBeGreaterThan(0);
  });
});

describe("a destination directory swapped for a symlink to a directory outside the root", () => {
  it("never gets a .part outside the root; each batch lands inside or is refused", async () => {
    await mkdir(join(root, "dst", "vm"), { recursive: true });
    await symlink(join(outside, "evil"), join(root, "dst", "vm-link"));
    await writeFile(join(root, "src.img"), Buffer.alloc(SIZE, INSIDE));
    const swapper = await startSwapper(join(root, "dst", "vm"), join(root, "dst", "vm-link"));
    const outcomes = { landed: 0, refused: 0 };
    try {
      for (let i = 0; i < 60; i++) {
        const o = { address: server.address, secret, sourceHost: "h", migrationId: `d${i}`, volumeSizeBytes: SIZE };
        const batch = batchOptions(
          { ...o, sourcePath: join(root, "src.img") },
          { sourceRoots: [root], destDir: "dst/vm", destName: `v${i}` },
        );
        const done = await server.copyLocal(batch).catch((err: unknown) => err);
        if (done instanceof Error) {
          expect(done).toBeInstanceOf(PathOutsideRootError);
          outcomes.refused++;
        } else outcomes.landed++;
      }
    } finally {
      await stopSwapper(swapper);
    }
    expect(await readdir(join(outside, "evil"))).toEqual([]);
    expect(outcomes.landed + outcomes.refused).toBe(60);
    expect(outcomes.refused).toBeGreaterThan(0);
  });
});
