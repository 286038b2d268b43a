// A service that cannot continue ends `failed`: the reason logged, a non-zero exit. Real
// processes (bin/dwcp.mjs) against a real nats-server that is then stopped for good.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { NatsServerHandle } from "#common/nats-server.js";
import { ensureLayout, ensureWorkStream } from "#common/layout.js";
import { startSecureNats, type SecureNats } from "./support/secure-nats.js";

const BIN = new URL("../bin/dwcp.mjs", import.meta.url).pathname;

interface Service {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  /** Resolves with the first log line (parsed pino JSON) that matches. */
  logged(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

function startService(args: string[], env: Record<string, string>): Service {
  const child = spawn(process.execPath, [BIN, ...args], {
    // No credentials here: the explicit insecure setting for events.
    env: { ...process.env, DWCP_LOG_LEVEL: "info", DWCP_EVENTS_UNSIGNED: "on", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<{
    match: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }> = [];
  createInterface({ input: child.stdout }).on("line", (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    lines.push(line);
    for (const w of waiters.filter((w) => w.match(line))) w.resolve(line);
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    lines,
    exited,
    logged: (match) =>
      new Promise((resolve, reject) => {
        const seen = lines.find(match);
        if (seen) return resolve(seen);
        waiters.push({ match, resolve });
        void exited.then((code) => reject(new Error(`exited (${code}) first; log:\n${JSON.stringify(lines)}`)));
      }),
  };
}

describe("a service that cannot continue ends failed", () => {
  let dir: string;
  let server: NatsServerHandle;
  let secure: SecureNats;
  let service: Service | undefined;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "dwcp-lifecycle-"));
    // As `dwcp up` runs it: a secured server, and the layout provisioned by admin.
    secure = await startSecureNats(dir, { hosts: ["a"] });
    server = secure.server;
    const admin = await secure.connect("admin");
    await ensureLayout(admin.nc, admin.jsm, { replicas: 1 });
    await ensureWorkStream(admin.jsm, "a", { replicas: 1 });
    await admin.nc.close();
  });

  afterEach(async () => {
    if (service && service.child.exitCode === null) {
      service.child.kill("SIGKILL");
      await service.exited;
    }
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the coordinator, once its nats-server is gone for good", async () => {
    service = startService(["coordinator", "--nats", server.url], {
      DWCP_NATS_DOWN_LIMIT_MS: "1000",
      ...secure.env("coordinator"),
    });
    await service.logged((l) => l["state"] === "running");
    await server.stop();
    expect(await service.exited).toBe(1);
    const fatal = service.lines.find((l) => l["level"] === 60);
    expect(fatal).toMatchObject({ reason: "NATS unreachable for 1000 ms", state: "failed" });
    expect(service.lines.filter((l) => l["msg"] === "stop failed")).toEqual([]);
    expect(service.lines.at(-1)).toMatchObject({ msg: "failed", state: "failed" });
  });

  it("the mover, when start-up fails (a --root that does not exist)", async () => {
    service = startService(["mover", "--nats", server.url, "--host", "a", "--root", join(dir, "missing")], {
      DWCP_SECRET: "0123456789abcdef0123",
      DWCP_DATA_PLAINTEXT: "on",
      ...secure.env("mover-a"),
    });
    expect(await service.exited).toBe(1);
    const fatal = service.lines.find((l) => l["level"] === 60);
    expect(fatal).toMatchObject({ reason: "start-up failed", state: "failed" });
    expect(JSON.stringify(fatal?.["err"])).toMatch(/missing/);
    expect(service.lines.at(-1)).toMatchObject({ msg: "failed", state: "failed" });
  });

  it("and a signal still ends it stopped, exit 0", async () => {
    service = startService(["coordinator", "--nats", server.url], secure.env("coordinator"));
    await service.logged((l) => l["state"] === "running");
    service.child.kill("SIGTERM");
    expect(await service.exited).toBe(0);
    expect(service.lines.at(-1)).toMatchObject({ msg: "stopped", state: "stopped" });
  });
});
