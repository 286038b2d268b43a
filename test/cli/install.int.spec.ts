// The package as an operator installs it: `npm pack`, then `npm install -g` of the tarball into
// a temporary prefix (dependencies from the registry or npm's cache, the native module built by
// the install script), then the installed `dwcp` runs from another directory.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");

/** This process's environment without npm's own variables (a test run from `npm test` has them). */
const cleanEnv = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith("npm_")));

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; out: string }> {
  const child = spawn(cmd, args, { cwd, env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((r) => child.once("close", (code) => r({ code, out })));
}

describe("npm pack + npm install -g gives a working dwcp", () => {
  let dir: string;
  let dwcp: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "dwcp-test-install-"));
    const pack = await run("npm", ["pack", "--pack-destination", dir], ROOT);
    expect(pack.code, pack.out).toBe(0);
    const tarball = readdirSync(dir).find((f) => /^dwcp-.*\.tgz$/.test(f));
    expect(tarball, pack.out).toBeDefined();
    const install = await run(
      "npm",
      [
        "install",
        "-g",
        "--prefix",
        join(dir, "prefix"),
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        join(dir, tarball ?? ""),
      ],
      dir,
    );
    expect(install.code, install.out).toBe(0);
    dwcp = join(dir, "prefix", "bin", "dwcp");
  }, 900_000);
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("dwcp --version and dwcp demo --size 64M run from the install", async () => {
    expect(existsSync(dwcp)).toBe(true);
    const cwd = join(dir, "elsewhere");
    mkdirSync(cwd);
    const version = await run(dwcp, ["--version"], cwd);
    expect(version.code, version.out).toBe(0);
    expect(version.out.trim()).toMatch(/^dwcp \d+\.\d+\.\d+$/);
    const demo = await run(dwcp, ["demo", "--size", "64M"], cwd);
    expect(demo.code, demo.out).toBe(0);
    expect(demo.out).toMatch(/disk\.img: sha256 identical/);
    expect(demo.out).toMatch(/memory\.img: sha256 identical/);
    expect(readdirSync(cwd), "the demo works in a temporary directory").toEqual([]);
  }, 300_000);
});
