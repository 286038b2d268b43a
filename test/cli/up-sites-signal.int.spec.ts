// `dwcp up --sites 2` stops on one Ctrl-C: the terminal sends SIGINT to the whole process group
// (dwcp, and every nats-server, coordinator and mover it started), and everything is gone within
// the drain grace period, leaving the data dir unlocked. While it runs, its dashboard shows both sites.
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

interface Snapshot {
  sites?: { sites: Array<{ site: string }> };
  problems: string[];
}

/** The first snapshot on the dashboard's event stream that `match`es (within 60 s). */
async function snapshotWhere(url: string, match: (s: Snapshot) => boolean): Promise<Snapshot> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 60_000);
  try {
    const res = await fetch(url, { signal: abort.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the dashboard's event stream ended");
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = /^data: (.*)$/m.exec(buffer.slice(0, end))?.[1];
        buffer = buffer.slice(end + 2);
        if (data === undefined) continue;
        const s = JSON.parse(data) as Snapshot;
        if (match(s)) return s;
      }
    }
  } finally {
    clearTimeout(timer);
    abort.abort();
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
      // Its dashboard shows the federation: both sites, read at the first site as its observer.
      const url = /dashboard \(site [^)]+\): (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stdout)?.[1];
      expect(url, stdout).toBeDefined();
      const sites = await snapshotWhere(`${url ?? ""}events`, (s) => (s.sites?.sites.length ?? 0) === 2);
      expect(sites.problems).toEqual([]);
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
