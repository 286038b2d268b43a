import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, createWriteStream, mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";
import { stopChild } from "./child-process.js";
import { DwcpError } from "./errors.js";
import { processSetting } from "./config.js";

/**
 * The one way dwcp starts nats-server: the embedded stack (cli/stack.ts), federation's hub and
 * site servers, the drills, benches and test helpers all call startNatsServer().
 */

export interface NatsServerHandle {
  name: string;
  url: string;
  port: number;
  pid: number;
  /** The config file it was started from, if any. */
  configFile: string | undefined;
  process: ChildProcess;
  /** `signal` (default SIGTERM), SIGKILL after 5 s; resolves once it exited and its log is closed. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export class NatsServerMissingError extends DwcpError {
  readonly code = "NATS_SERVER_MISSING" as const;
  readonly retryable = false;
  constructor() {
    super(
      "nats-server not found: install it with `sudo apt-get install -y nats-server` " +
        "(or put it on PATH, or set DWCP_NATS_SERVER)",
    );
  }
}

/** nats-server exited or stayed silent before it said it was ready; the message names its log. */
export class NatsServerStartError extends DwcpError {
  readonly code = "NATS_SERVER_START_FAILED" as const;
  readonly retryable = false;
}

/**
 * nats-server at `explicit`, else on PATH or in Debian's /usr/sbin; undefined if none. `explicit`
 * defaults to $DWCP_NATS_SERVER (the one environment read here; callers with a config pass it).
 */
export function findNatsServer(explicit: string | undefined = processSetting("natsServer")): string | undefined {
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

/** From flags: JetStream in `storeDir`, listening on 127.0.0.1:`port` (default: a free port). */
interface FromFlags {
  storeDir: string;
  port?: number;
  configFile?: never;
  config?: never;
}

/** From `-c configFile` (written from `config` first when given); `port` is the one it names. */
interface FromConfig {
  configFile: string;
  config?: string;
  port: number;
  storeDir?: never;
}

export type NatsServerOptions = (FromFlags | FromConfig) & {
  /** Names the server in errors. Default "nats-server". */
  name?: string;
  /** Extra flags after the generated ones. */
  extraArgs?: string[];
  /** The server's log (its stderr) is appended here; default: discarded. */
  logFile?: string;
  /** Default 15 000 ms. */
  readyTimeoutMs?: number;
  /** The nats-server binary. Default: findNatsServer(). */
  bin?: string;
  /** The child's environment. Default: this process's. */
  env?: NodeJS.ProcessEnv;
  /** Called as soon as the child is spawned, before it is ready (e.g. to record its PID for cleanup). */
  onSpawn?: (child: ChildProcess) => void;
};

const READY = "Server is ready";

/**
 * Starts a private nats-server (from flags: JetStream in `storeDir` on a free loopback port; or
 * from a config file) and resolves once it logs that it is ready: an event, not a poll. Stopped
 * by PID; never touches the machine's shared server.
 */
export async function startNatsServer(opts: NatsServerOptions): Promise<NatsServerHandle> {
  const bin = opts.bin ?? findNatsServer();
  if (!bin) throw new NatsServerMissingError();
  const name = opts.name ?? "nats-server";
  const port = opts.port ?? (await freePort());
  const args = argsOf(opts, port);
  const child = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"], env: opts.env ?? process.env });
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  opts.onSpawn?.(child);
  const log = opts.logFile === undefined ? undefined : createWriteStream(opts.logFile, { flags: "a" });
  // The pipe ends the log when stderr closes, which is after the process exits.
  const logClosed = log && new Promise<void>((resolve) => log.once("close", () => resolve()));
  if (log) child.stderr?.pipe(log);
  else child.stderr?.resume();
  try {
    await waitForReady(child, name, opts.logFile, opts.readyTimeoutMs ?? 15_000);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return {
    name,
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid ?? -1,
    configFile: opts.configFile,
    process: child,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      await stopChild(child, exited, signal);
      await logClosed;
    },
  };
}

function argsOf(opts: NatsServerOptions, port: number): string[] {
  if (opts.configFile !== undefined) {
    if (opts.config !== undefined) writeFileSync(opts.configFile, opts.config);
    return ["-c", opts.configFile, ...(opts.extraArgs ?? [])];
  }
  mkdirSync(opts.storeDir, { recursive: true });
  return ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", opts.storeDir, ...(opts.extraArgs ?? [])];
}

function waitForReady(
  child: ChildProcess,
  name: string,
  logFile: string | undefined,
  timeoutMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let tail = "";
    const done = (err?: Error): void => {
      clearTimeout(timer);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      if (err) reject(err);
      else resolve();
    };
    const onData = (chunk: Buffer): void => {
      tail = (tail + chunk.toString("utf8")).slice(-4096);
      if (tail.includes(READY)) done();
    };
    const failed = (detail: string): NatsServerStartError =>
      new NatsServerStartError(`${name} did not start: ${detail}${logFile === undefined ? "" : `; see ${logFile}`}`);
    const onExit = (code: number | null): void => done(failed(`exited with code ${code}: ${lastLine(tail)}`));
    const timer = setTimeout(() => done(failed(`not ready within ${timeoutMs} ms`)), timeoutMs);
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
  });
}

const lastLine = (s: string): string => s.trim().split("\n").pop() ?? "";
