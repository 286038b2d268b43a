import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BIN } from "../cli/stack.js";

const dirs: string[] = [];
const groups: number[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), "dwcp-test-up-"));
  dirs.push(d);
  return d;
};

afterAll(() => {
  for (const g of groups) if (groupAlive(g)) process.kill(-g, "SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Run {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

/** `dwcp <args>` in its own process group (as a shell runs a foreground job). */
function dwcp(...args: string[]): Run {
  const child = spawn(process.execPath, [BIN, ...args], { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid !== undefined) groups.push(child.pid);
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("close", (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

/** Resolves once the run printed `text` on stdout; rejects if it exits first. */
function printed(r: Run, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (r.out().includes(text)) resolve();
    };
    r.child.stdout?.on("data", check);
    check();
    void r.exited.then((code) => reject(new Error(`exited ${code} before "${text}":\n${r.out()}\n${r.err()}`)));
  });
}

/** Sends SIGINT to the whole group (one Ctrl-C) and returns the seconds until the process exited. */
async function ctrlC(r: Run): Promise<{ code: number | null; seconds: number }> {
  const t0 = Date.now();
  process.kill(-(r.child.pid ?? 0), "SIGINT");
  const code = await r.exited;
  return { code, seconds: (Date.now() - t0) / 1000 };
}

describe("dwcp up protects a running stack", () => {
  it("refuses a second up on the same data dir and a nats port in use; one Ctrl-C stops it all", async () => {
    const dir = tempDir();
    const first = dwcp("up", "--data-dir", dir);
    await printed(first, "Ctrl-C stops everything.");
    const port = /nats:\/\/127\.0\.0\.1:(\d+)/.exec(first.out())?.[1] ?? "";
    // Its dashboard, on a free loopback port: the page, and snapshots for it.
    const dashboard = /dashboard: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(first.out())?.[1];
    expect(dashboard, first.out()).toBeDefined();
    expect((await fetch(dashboard ?? "")).status).toBe(200);
    const events = new AbortController();
    const stream = await fetch(`${dashboard ?? ""}events`, { signal: events.signal });
    expect(stream.headers.get("content-type")).toMatch(/^text\/event-stream/);
    events.abort();

    const same = dwcp("up", "--data-dir", dir);
    expect(await same.exited).toBe(1);
    expect(same.err()).toMatch(
      new RegExp(`data dir ${dir} is in use by \`dwcp up --data-dir ${dir}\` \\(pid ${first.child.pid}`),
    );
    expect(same.out()).not.toMatch(/dwcp is up/);

    const other = tempDir();
    const taken = dwcp("up", "--data-dir", other, "--nats-port", port);
    expect(await taken.exited).toBe(1);
    expect(taken.err(), "the nats-server's own reason").toMatch(/address already in use/);
    expect(taken.out()).not.toMatch(/dwcp is up/);
    expect(groupAlive(taken.child.pid ?? 0), "nothing of the refused stack is left").toBe(false);

    const stop = await ctrlC(first);
    expect(stop.code).toBe(0);
    expect(stop.seconds, "within the drain grace period").toBeLessThan(30);
    expect(groupAlive(first.child.pid ?? 0), "no process of the stack is left").toBe(false);
    expect(existsSync(join(dir, "lock")), "the lock is released").toBe(false);
  });
});
