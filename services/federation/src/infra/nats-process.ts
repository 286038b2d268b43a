import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, writeFileSync } from "node:fs";
import { DwcpError } from "#common/errors.js";
import { findNatsServer, NatsServerMissingError } from "#common/nats-server.js";

/** nats-server exited or stayed silent before it said it was ready. */
export class NatsServerStartError extends DwcpError {
  readonly code = "NATS_SERVER_START_FAILED" as const;
  readonly retryable = false;
  constructor(
    readonly server: string,
    detail: string,
    readonly logFile: string,
  ) {
    super(`nats-server ${server} did not start: ${detail}; see ${logFile}`);
  }
}

export interface ServerProcess {
  name: string;
  url: string;
  port: number;
  pid: number;
  configFile: string;
  stop(): Promise<void>;
}

const READY = "Server is ready";

/**
 * Writes `config` to `configFile`, starts `nats-server -c configFile` and resolves once the
 * server logs that it is ready (an event, not a poll). Its log goes to `logFile`.
 */
export async function spawnNatsServer(opts: {
  name: string;
  port: number;
  config: string;
  configFile: string;
  logFile: string;
  /** Default 15 000 ms. */
  readyTimeoutMs?: number;
}): Promise<ServerProcess> {
  const bin = findNatsServer();
  if (!bin) throw new NatsServerMissingError();
  writeFileSync(opts.configFile, opts.config);
  const child = spawn(bin, ["-c", opts.configFile], { stdio: ["ignore", "ignore", "pipe"] });
  const log = createWriteStream(opts.logFile, { flags: "a" });
  // The pipe ends the log when stderr closes, which is after the process exits.
  const logClosed = new Promise<void>((resolve) => log.once("close", () => resolve()));
  child.stderr?.pipe(log);
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  try {
    await waitForReady(child, opts.name, opts.logFile, opts.readyTimeoutMs ?? 15_000);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return {
    name: opts.name,
    url: `nats://127.0.0.1:${opts.port}`,
    port: opts.port,
    pid: child.pid ?? -1,
    configFile: opts.configFile,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await closed;
        clearTimeout(timer);
      }
      await logClosed;
    },
  };
}

function waitForReady(child: ChildProcess, name: string, logFile: string, timeoutMs: number): Promise<void> {
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
    const onExit = (code: number | null): void =>
      done(new NatsServerStartError(name, `exited with code ${code}: ${lastLine(tail)}`, logFile));
    const timer = setTimeout(
      () => done(new NatsServerStartError(name, `not ready within ${timeoutMs} ms`, logFile)),
      timeoutMs,
    );
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
  });
}

const lastLine = (s: string): string => s.trim().split("\n").pop() ?? "";
