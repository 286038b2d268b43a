import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BIN } from "../cli/stack.js";

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/** `dwcp <args>` with its own temp dir as TMPDIR: exit code, stdout, stderr. */
async function dwcp(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; tmp: string }> {
  const tmp = await mkdtemp(join(tmpdir(), "dwcp-test-drill-"));
  dirs.push(tmp);
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((r) => child.once("close", r));
  return { code, stdout, stderr, tmp };
}

describe("dwcp drill", () => {
  it("refuses a bad --size before it creates anything", async () => {
    const r = await dwcp("drill", "--size", "banana");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--size must be a size like 4M/);
    // (tsx keeps its compile cache there too: only dwcp's own dirs count)
    expect(readdirSync(r.tmp).filter((n) => n.startsWith("dwcp"))).toEqual([]);
  });

  it("says where it works and removes it afterwards", async () => {
    const r = await dwcp("drill", "--size", "1M");
    expect(r.code, r.stderr).toBe(0);
    const dir = /working in (\S+)/.exec(r.stderr)?.[1] ?? "";
    expect(dir.startsWith(join(r.tmp, "dwcp-drill-"))).toBe(true);
    expect(r.stderr).toContain(`removed ${dir}`);
    expect(existsSync(dir)).toBe(false);
  });

  it("keeps it with --keep and says so", async () => {
    const r = await dwcp("drill", "--size", "1M", "--keep", "--json");
    expect(r.code, r.stderr).toBe(0);
    const dir = /working in (\S+)/.exec(r.stderr)?.[1] ?? "";
    expect(r.stderr).toContain(`kept ${dir}`);
    expect(existsSync(join(dir, "dr"))).toBe(true);
    expect((JSON.parse(r.stdout) as { workDir: string }).workDir).toBe(dir);
  });
});
