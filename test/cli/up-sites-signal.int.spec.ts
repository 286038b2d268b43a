// `dwcp up --sites 2` stops on one Ctrl-C: the terminal sends SIGINT to the whole process group
// (dwcp, and every nats-server, coordinator and mover it started), and everything is gone within
// the drain grace period, leaving the data dir unlocked.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BIN } from "../../cli/stack.js";

/** The drain grace period of a service (lifecycle.ts), and a margin for a loaded machine. */
const GRACE_MS = 10_000;
const MARGIN_MS = 5_000;

const dir = mkdtempSync(join(tmpdir(), "dwcp-test-up-sites-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Whether any process of process group `pgid` is alive. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("dwcp up --sites", () => {
  it("one SIGINT to the process group stops everything within the grace period", async () => {
    const dataDir = join(dir, "fed");
    // Its own process group, as a shell gives a foreground job.
    const child = spawn(process.execPath, [BIN, "up", "--sites", "2", "--hosts", "h", "--data-dir", dataDir], {
      detached: true,
      env: { ...process.env, TMPDIR: dir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const pgid = child.pid ?? 0;
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes("Ctrl-C stops everything.")) resolve();
        });
        void exited.then((code) => reject(new Error(`up exited ${code} before it was up: ${stderr}`)));
      });
      const t0 = Date.now();
      process.kill(-pgid, "SIGINT");
      const code = await exited;
      const ms = Date.now() - t0;
      expect(code, stderr).toBe(0);
      expect(ms).toBeLessThan(GRACE_MS + MARGIN_MS);
      expect(stdout).toContain("stopping...");
      // Nothing of the group is left (the servers, coordinators and movers it started).
      const deadline = Date.now() + 5_000;
      while (groupAlive(pgid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(groupAlive(pgid), "a process of the stack outlived dwcp up").toBe(false);
    } finally {
      if (groupAlive(pgid)) process.kill(-pgid, "SIGKILL");
    }
  }, 120_000);
});
