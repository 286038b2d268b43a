import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, mkdirSync, openSync, closeSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { delimiter, join } from "node:path";

export interface NatsServerHandle {
  url: string;
  port: number;
  pid: number;
  storeDir: string;
  process: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export class NatsServerMissingError extends Error {
  readonly code = "NATS_SERVER_MISSING";
  constructor() {
    super(
      "nats-server not found: install it with `sudo apt-get install -y nats-server` (or put it on PATH, or set DWCP_NATS_SERVER)",
    );
  }
}

/** nats-server from DWCP_NATS_SERVER, PATH or Debian's /usr/sbin; undefined if none. */
export function findNatsServer(): string | undefined {
  const explicit = process.env["DWCP_NATS_SERVER"];
  const candidates = [
    ...(explicit ? [explicit] : []),
    ...(process.env["PATH"] ?? "").split(delimiter).map((d) => join(d, "nats-server")),
    "/usr/sbin/nats-server",
    "/usr/local/bin/nats-server",
  ];
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** A TCP port that was free a moment ago (the kernel picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls a TCP connect: a freshly spawned nats-server offers no other readiness signal. */
export async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with code ${child.exitCode} before it listened`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server did not listen on ${port} within ${timeoutMs} ms`);
}

/**
 * Starts a private nats-server with JetStream in `storeDir` on a free loopback port and waits
 * until it accepts connections. Stopped by PID; never touches the machine's shared server.
 */
export async function startNatsServer(opts: {
  storeDir: string;
  port?: number;
  logFile?: string;
  extraArgs?: string[];
}): Promise<NatsServerHandle> {
  const bin = findNatsServer();
  if (!bin) throw new NatsServerMissingError();
  mkdirSync(opts.storeDir, { recursive: true });
  const port = opts.port ?? (await freePort());
  const logFd = opts.logFile ? openSync(opts.logFile, "a") : "ignore";
  const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", opts.storeDir, ...(opts.extraArgs ?? [])];
  const child = spawn(bin, args, { stdio: ["ignore", logFd, logFd], detached: false });
  if (typeof logFd === "number") closeSync(logFd);
  try {
    await waitForPort(port, child, 10_000);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid ?? -1,
    storeDir: opts.storeDir,
    process: child,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
