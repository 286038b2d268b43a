import { mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, writeFile } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { beneathImpls, openRootDir, PathRefusedError, type BeneathImpl, type DirHandle } from "./index.js";

let work: string;
let root: string;

beforeAll(async () => {
  work = await realpath(await mkdtemp(join(tmpdir(), "dwcp-beneath-")));
  root = join(work, "root");
  await mkdir(join(root, "vms", "deep"), { recursive: true });
  await mkdir(join(work, "outside"));
  await writeFile(join(work, "outside", "secret"), "not yours");
  await writeFile(join(root, "vms", "a.img"), "abc");
  await symlink(join(work, "outside"), join(root, "out-dir"));
  await symlink(join(work, "outside", "secret"), join(root, "vms", "out-file"));
  await symlink("a.img", join(root, "vms", "in-file"));
  execFileSync("mkfifo", [join(root, "vms", "fifo")]);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const impls = (["openat2", "walk", "proc"] as const).filter((i) => beneathImpls[i] !== undefined);

async function refusal(p: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    return err;
  }
  throw new Error("expected a refusal");
}

describe.each(impls)("DirHandle (%s)", (impl: BeneathImpl) => {
  let dir: DirHandle;
  beforeAll(() => {
    dir = openRootDir(root, impl);
    expect(dir.impl).toBe(impl);
  });
  afterAll(() => dir.close());

  it("opens a regular file beneath the root and reads it", async () => {
    const fh = await dir.openFile("vms/a.img");
    try {
      expect((await fh.readFile()).toString()).toBe("abc");
    } finally {
      await fh.close();
    }
  });

  it.each([
    ["out-dir/secret", "symlink"],
    ["vms/out-file", "symlink"],
    ["vms/in-file", "symlink"],
    ["../outside/secret", "escapes"],
    ["vms/../../outside/secret", "escapes"],
    ["/etc/hostname", "escapes"],
    ["vms//a.img", "invalid"],
    ["vms/./a.img", "invalid"],
    ["vms/fifo", "not-a-file"],
    ["vms", "not-a-file"],
  ])("refuses %j as %s", async (p, why) => {
    const err = await refusal(dir.openFile(p));
    expect(err).toBeInstanceOf(PathRefusedError);
    expect(err).toMatchObject({ code: "PATH_REFUSED", refusal: why });
  });

  it("refuses a directory path through a symlink, and a file where a directory is asked", async () => {
    expect(await refusal(() => dir.openDir("out-dir"))).toMatchObject({ refusal: "symlink" });
    expect(await refusal(() => dir.openDir("vms/a.img"))).toMatchObject({ sysCode: "ENOTDIR" });
  });

  it("says ENOENT for a missing file", async () => {
    expect(await refusal(dir.openFile("vms/none"))).toMatchObject({ sysCode: "ENOENT" });
  });

  it("creates, renames without clobbering, stats and unlinks relative to held fds", async () => {
    const { dir: d, created } = await dir.makeDirs(`made-${impl}/x/y`);
    try {
      expect(created).toBe(true);
      expect((await stat(join(root, `made-${impl}`, "x", "y"))).isDirectory()).toBe(true);
      const fh = await d.openFile("v.part", { flags: 0o102 /* O_RDWR|O_CREAT */, mode: 0o600 });
      await fh.writeFile("data");
      await fh.close();
      expect(d.stat("v.part")).toMatchObject({ kind: "file", size: 4 });
      expect(d.stat("v.part")?.ino).toBe((await stat(join(d.path, "v.part"))).ino);
      await writeFile(join(d.path, "taken"), "keep");
      expect(await refusal(() => d.rename("v.part", "taken", { noReplace: true }))).toMatchObject({
        sysCode: "EEXIST",
      });
      expect(await readFile(join(d.path, "taken"), "utf8")).toBe("keep");
      d.rename("v.part", "v", { noReplace: true });
      expect(d.stat("v.part")).toBeUndefined();
      expect(await readFile(join(d.path, "v"), "utf8")).toBe("data");
      d.unlink("v");
      d.unlink("v", { ignoreMissing: true });
      expect(d.stat("v")).toBeUndefined();
      expect(() => d.rename("../x", "y")).toThrow(PathRefusedError);
    } finally {
      d.close();
    }
    const again = await dir.makeDirs(`made-${impl}/x/y`);
    expect(again.created).toBe(false);
    again.dir.close();
  });

  it("refuses to create through a symlinked directory", async () => {
    expect(await refusal(dir.makeDirs("out-dir/new"))).toMatchObject({ refusal: "symlink" });
    await expect(stat(join(work, "outside", "new"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("sees a symlink as a symlink", () => {
    expect(dir.stat("out-dir")).toMatchObject({ kind: "symlink" });
  });
});
