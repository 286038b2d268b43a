import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, readFile, realpath, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ConfigError } from "#common/errors.js";
import { crc32c } from "#native/index.js";
import { PathNotFoundError, PathOutsideRootError } from "../errors.js";
import { abortVolumes, confine, finalizeVolumes, probeDestination, probeSource, resolveRoots } from "./volumes.js";
import { readBackName, recordReadBack } from "./read-back.js";

const MiB = 1024 * 1024;
let work: string;
let roots: string[];
let root: string;
let outside: string;

beforeAll(async () => {
  work = await realpath(await mkdtemp(join(tmpdir(), "dwcp-volumes-")));
  [root, outside] = [join(work, "root"), join(work, "outside")];
  await Promise.all([mkdir(root), mkdir(outside), mkdir(join(work, "root2"))]);
  await writeFile(join(outside, "secret.img"), "not yours");
  await symlink(outside, join(root, "out-link"));
  await symlink(join(root, "vms"), join(root, "in-link"));
  await symlink(join(work, "nowhere"), join(root, "dangling"));
  await mkdir(join(root, "vms"));
  await writeFile(join(root, "vms", "a.img"), "abc");
  roots = await resolveRoots([root, join(work, "root2")]);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("resolveRoots and confine", () => {
  it("lists every unusable root at once", async () => {
    const err: unknown = await resolveRoots([join(work, "missing"), join(root, "vms", "a.img")]).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toHaveLength(2);
  });

  it("resolves relative paths against the first root and follows symlinks that stay inside", async () => {
    expect(await confine(roots, "vms/a.img", { mustExist: true })).toBe(join(root, "vms", "a.img"));
    expect(await confine(roots, "in-link/a.img", { mustExist: true })).toBe(join(root, "vms", "a.img"));
    expect(await confine(roots, "in-link/new/deeper", { mustExist: false })).toBe(join(root, "vms", "new", "deeper"));
  });

  it.each([
    ["../outside/secret.img", true],
    ["/tmp/../etc/passwd", true],
    ["/etc/passwd", true],
    ["out-link/secret.img", true],
    ["out-link/new-dir", false],
    ["dangling/x", false],
    ["vms/../../outside", false],
  ])("refuses %j (mustExist %s)", async (p, mustExist) => {
    await expect(confine(roots, p, { mustExist })).rejects.toBeInstanceOf(PathOutsideRootError);
  });

  it("refuses an absolute path outside every root", async () => {
    await expect(confine(roots, join(outside, "secret.img"), { mustExist: true })).rejects.toBeInstanceOf(
      PathOutsideRootError,
    );
  });

  it("says a missing path is missing", async () => {
    await expect(confine(roots, "vms/none.img", { mustExist: true })).rejects.toBeInstanceOf(PathNotFoundError);
  });
});

describe("probeSource and probeDestination", () => {
  it("answers canonical paths and sizes", async () => {
    const reply = await probeSource(
      { op: "probeSource", version: 1, migrationId: "m", paths: ["in-link/a.img"] },
      roots,
    );
    const st = await stat(join(root, "vms", "a.img"));
    expect(reply).toEqual({
      ok: true,
      volumes: [{ path: join(root, "vms", "a.img"), sizeBytes: 3, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid }],
    });
  });

  it.each([
    [["vms/none.img"], "SOURCE_NOT_FOUND"],
    [["vms"], "SOURCE_NOT_REGULAR_FILE"],
    [["out-link/secret.img"], "PATH_OUTSIDE_ROOT"],
    [["vms/a.img", "/etc/passwd"], "PATH_OUTSIDE_ROOT"],
  ])("refuses source %j with %s", async (paths, reason) => {
    const reply = await probeSource({ op: "probeSource", version: 1, migrationId: "m", paths }, roots);
    expect(reply).toMatchObject({ ok: false, reason });
  });

  it("accepts a directory that does not exist yet, and creates nothing", async () => {
    const req = {
      op: "probeDestination" as const,
      version: 1 as const,
      migrationId: "m",
      dir: "new/vm",
      names: ["d0", "d1"],
    };
    expect(await probeDestination(req, roots)).toEqual({ ok: true, dir: join(root, "new", "vm") });
    await expect(stat(join(root, "new"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it.each([
    ["vms", ["a.img"], "DESTINATION_EXISTS"],
    ["vms", ["x", "y", "x"], "DUPLICATE_DESTINATION"],
    ["vms", ["../a.img"], "PATH_OUTSIDE_ROOT"],
    ["out-link", ["x"], "PATH_OUTSIDE_ROOT"],
    ["../outside", ["x"], "PATH_OUTSIDE_ROOT"],
  ])("refuses destination %j %j with %s", async (dir, names, reason) => {
    const reply = await probeDestination({ op: "probeDestination", version: 1, migrationId: "m", dir, names }, roots);
    expect(reply).toMatchObject({ ok: false, reason });
  });
});

describe("finalizeVolumes and abortVolumes", () => {
  const dir = "fin";
  let content: Buffer;
  const finalize = (volumes: { destName: string; sizeBytes: number; crc32c: number }[], verify = true) =>
    finalizeVolumes({ op: "finalize", version: 1, migrationId: "m", destDir: dir, verify, volumes }, roots);

  beforeEach(async () => {
    await rm(join(root, dir), { recursive: true, force: true });
    await mkdir(join(root, dir));
    // A sparse 5 MiB + 3 volume: data at the start, the middle and the end, holes between.
    content = Buffer.alloc(5 * MiB + 3);
    randomBytes(10_000).copy(content, 1);
    randomBytes(4096).copy(content, 3 * MiB);
    randomBytes(3).copy(content, 5 * MiB);
    const fh = await open(join(root, dir, "d0.part"), "w");
    for (const [at, len] of [
      [0, 10_001],
      [3 * MiB, 4096],
      [5 * MiB, 3],
    ] as const) {
      await fh.write(content, at, len, at);
    }
    await fh.close();
  });

  it("verifies, renames and is idempotent", async () => {
    const volume = { destName: "d0", sizeBytes: content.length, crc32c: crc32c(content) };
    expect(await finalize([volume])).toEqual({ ok: true, paths: [join(root, dir, "d0")] });
    expect((await readFile(join(root, dir, "d0"))).equals(content)).toBe(true);
    expect(await readdir(join(root, dir))).toEqual(["d0"]);
    expect(await finalize([volume])).toEqual({ ok: true, paths: [join(root, dir, "d0")] });
  });

  it("extends a short .part to the volume size with a hole", async () => {
    const longer = Buffer.concat([content, Buffer.alloc(MiB)]);
    const reply = await finalize([{ destName: "d0", sizeBytes: longer.length, crc32c: crc32c(longer) }]);
    expect(reply.ok).toBe(true);
    expect((await stat(join(root, dir, "d0"))).size).toBe(longer.length);
  });

  it("refuses with VERIFY_FAILED after one byte of the .part changed, and keeps the .part", async () => {
    const fh = await open(join(root, dir, "d0.part"), "r+");
    await fh.write(Buffer.from([(content[3 * MiB + 7] ?? 0) ^ 0xff]), 0, 1, 3 * MiB + 7);
    await fh.close();
    const reply = await finalize([{ destName: "d0", sizeBytes: content.length, crc32c: crc32c(content) }]);
    expect(reply).toMatchObject({ ok: false, reason: "VERIFY_FAILED" });
    expect(await readdir(join(root, dir))).toEqual(["d0.part"]);
  });

  // Read-back records: what batches that were read back after their fsync wrote (read-back.ts).
  const record = (migrationId: string, start: number, end: number): Promise<void> =>
    recordReadBack(join(root, dir, "d0.part"), {
      migrationId,
      start,
      end,
      crc32c: crc32c(content.subarray(start, end)),
    });
  const flipOneByte = async (): Promise<void> => {
    const fh = await open(join(root, dir, "d0.part"), "r+");
    await fh.write(Buffer.from([(content[3 * MiB + 7] ?? 0) ^ 0xff]), 0, 1, 3 * MiB + 7);
    await fh.close();
  };

  it("takes read-back records that cover the volume for the whole-volume read, and removes them", async () => {
    await record("m", 0, 2 * MiB);
    await record("m", 2 * MiB, content.length);
    await record("m", 0, 2 * MiB); // the same batch read back again (sent twice): the newest counts
    // The records are the check: a byte changed after its batch was read back is not seen again.
    await flipOneByte();
    const reply = await finalize([{ destName: "d0", sizeBytes: content.length, crc32c: crc32c(content) }]);
    expect(reply.ok).toBe(true);
    expect(await readdir(join(root, dir))).toEqual(["d0"]);
  });

  it("reads a volume of at most 1 MiB whole, records or not; finalizes several in one directory at once", async () => {
    const small = randomBytes(64 * 1024);
    const names = ["s0", "s1", "s2", "s3"];
    for (const n of names) await writeFile(join(root, dir, `${n}.part`), small);
    // Covering records of a small volume are not taken for the read: a byte changed is found.
    const part = join(root, dir, "s0.part");
    await recordReadBack(part, { migrationId: "m", start: 0, end: small.length, crc32c: crc32c(small) });
    const fh = await open(part, "r+");
    await fh.write(Buffer.from([(small[100] ?? 0) ^ 0xff]), 0, 1, 100);
    await fh.close();
    const one = (n: string) => finalize([{ destName: n, sizeBytes: small.length, crc32c: crc32c(small) }]);
    const replies = await Promise.all(names.map(one));
    expect(replies[0]).toMatchObject({ ok: false, reason: "VERIFY_FAILED" });
    expect(replies.slice(1)).toEqual(names.slice(1).map((n) => ({ ok: true, paths: [join(root, dir, n)] })));
    for (const n of names.slice(1)) expect((await readFile(join(root, dir, n))).equals(small)).toBe(true);
  });

  it(
    "reads the whole volume when the records leave a gap, belong to another migration, " +
      "mark a range rewritten, or disagree",
    async () => {
      await flipOneByte();
      const volume = { destName: "d0", sizeBytes: content.length, crc32c: crc32c(content) };
      const part = join(root, dir, "d0.part");
      await record("m", 0, 2 * MiB);
      await record("m", 3 * MiB, content.length); // [2 MiB, 3 MiB) was never read back
      expect(await finalize([volume])).toMatchObject({ ok: false, reason: "VERIFY_FAILED" });
      await rm(readBackName(part));
      await record("other", 0, content.length);
      expect(await finalize([volume])).toMatchObject({ ok: false, reason: "VERIFY_FAILED" });
      await rm(readBackName(part));
      await record("m", 0, content.length);
      await recordReadBack(part, { migrationId: "m", start: 0, end: content.length }); // sent again, not read back yet
      expect(await finalize([volume])).toMatchObject({ ok: false, reason: "VERIFY_FAILED" });
      await rm(readBackName(part));
      await recordReadBack(part, { migrationId: "m", start: 0, end: content.length, crc32c: 12345 });
      await writeFile(readBackName(part), '{"migrationId":"m","start":0,"en', { flag: "a" }); // torn by a crash
      expect(await finalize([volume])).toMatchObject({ ok: false, reason: "VERIFY_FAILED" });
      expect((await readdir(join(root, dir))).sort()).toEqual(["d0.part", "d0.part.verified"]);
      expect(
        await abortVolumes({ op: "abort", version: 1, migrationId: "m", destDir: dir, names: ["d0"] }, roots),
      ).toEqual({ ok: true });
      await expect(stat(join(root, dir))).rejects.toMatchObject({ code: "ENOENT" });
    },
  );

  it("creates an empty volume that never had a batch, and refuses a missing non-empty one", async () => {
    const empty = await finalizeVolumes(
      {
        op: "finalize",
        version: 1,
        migrationId: "m",
        destDir: "fresh/dir",
        verify: true,
        volumes: [{ destName: "e", sizeBytes: 0, crc32c: 0 }],
      },
      roots,
    );
    expect(empty).toEqual({ ok: true, paths: [join(root, "fresh", "dir", "e")] });
    expect((await stat(join(root, "fresh", "dir", "e"))).size).toBe(0);
    expect(await finalize([{ destName: "nope", sizeBytes: 10, crc32c: 0 }])).toMatchObject({
      ok: false,
      reason: "FINALIZE_FAILED",
    });
  });

  it("refuses to overwrite a final file it did not write", async () => {
    await writeFile(join(root, dir, "d0"), "someone else's");
    const reply = await finalize([{ destName: "d0", sizeBytes: content.length, crc32c: crc32c(content) }]);
    expect(reply).toMatchObject({ ok: false, reason: "DESTINATION_EXISTS" });
  });

  describe("incremental: the final file is the base", () => {
    const incremental = (volumes: { destName: string; sizeBytes: number; crc32c: number }[]) =>
      finalizeVolumes(
        { op: "finalize", version: 1, migrationId: "m", destDir: dir, verify: true, incremental: true, volumes },
        roots,
      );

    it("probe allows a regular file, never a directory or a symlink", async () => {
      await writeFile(join(root, dir, "base"), "old");
      await mkdir(join(root, dir, "sub"));
      await symlink(join(root, dir, "base"), join(root, dir, "link"));
      const probe = (names: string[]) =>
        probeDestination(
          { op: "probeDestination", version: 1, migrationId: "m", dir, names, incremental: true },
          roots,
        );
      expect(await probe(["base", "new"])).toEqual({ ok: true, dir: join(root, dir) });
      expect(await probe(["sub"])).toMatchObject({ ok: false, reason: "DESTINATION_EXISTS" });
      expect(await probe(["link"])).toMatchObject({ ok: false, reason: "DESTINATION_EXISTS" });
    });

    it("replaces the base with the .part, is idempotent, and abort keeps the base", async () => {
      await writeFile(join(root, dir, "d0"), "the earlier copy");
      expect(
        await abortVolumes({ op: "abort", version: 1, migrationId: "m", destDir: dir, names: ["d0"] }, roots),
      ).toEqual({ ok: true });
      expect(await readFile(join(root, dir, "d0"), "utf8")).toBe("the earlier copy");
      expect(await readdir(join(root, dir))).toEqual(["d0"]);
      // A base but no .part (the batches never came): not finalized.
      const volume = { destName: "d0", sizeBytes: content.length, crc32c: crc32c(content) };
      expect(await incremental([volume])).toMatchObject({ ok: false, reason: "FINALIZE_FAILED" });
      expect(await readFile(join(root, dir, "d0"), "utf8")).toBe("the earlier copy");

      await writeFile(join(root, dir, "d0.part"), content);
      expect(await finalize([volume])).toMatchObject({ ok: false, reason: "DESTINATION_EXISTS" });
      expect(await incremental([volume])).toEqual({ ok: true, paths: [join(root, dir, "d0")] });
      expect((await readFile(join(root, dir, "d0"))).equals(content)).toBe(true);
      expect(await readdir(join(root, dir))).toEqual(["d0"]);
      expect(await incremental([volume])).toEqual({ ok: true, paths: [join(root, dir, "d0")] });
    });

    it("an empty volume replaces a non-empty base", async () => {
      await writeFile(join(root, dir, "e"), "not empty");
      expect(await incremental([{ destName: "e", sizeBytes: 0, crc32c: 0 }])).toMatchObject({ ok: true });
      expect((await stat(join(root, dir, "e"))).size).toBe(0);
    });
  });

  it("abort removes .part files and the emptied directory, never a root", async () => {
    expect(
      await abortVolumes({ op: "abort", version: 1, migrationId: "m", destDir: dir, names: ["d0", "d1"] }, roots),
    ).toEqual({ ok: true });
    await expect(stat(join(root, dir))).rejects.toMatchObject({ code: "ENOENT" });
    expect(
      await abortVolumes({ op: "abort", version: 1, migrationId: "m", destDir: dir, names: ["d0"] }, roots),
    ).toEqual({ ok: true });
    expect(
      await abortVolumes({ op: "abort", version: 1, migrationId: "m", destDir: ".", names: ["zz"] }, roots),
    ).toEqual({ ok: true });
    expect((await stat(root)).isDirectory()).toBe(true);
    expect(
      await abortVolumes({ op: "abort", version: 1, migrationId: "m", destDir: "out-link", names: ["x"] }, roots),
    ).toMatchObject({
      ok: false,
      reason: "PATH_OUTSIDE_ROOT",
    });
  });
});
