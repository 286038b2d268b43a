import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { createInterface } from "node:readline";

const BIN = resolve(import.meta.dirname, "../../bin/dwcp.mjs");

/** A `dwcp` command as a real process, with its stdout lines (pino logs or CLI output) collected. */
export interface DwcpProcess {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first line (seen so far or later) that parses as JSON and satisfies `pred`. */
  waitFor(pred: (j: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function spawnDwcp(args: string[], env: NodeJS.ProcessEnv = {}): DwcpProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    // No credentials here: the explicit insecure setting (a caller's env may give keys instead).
    env: { ...process.env, DWCP_EVENTS_UNSIGNED: "on", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  child.once("exit", () => waiters.splice(0).forEach((w) => w()));
  createInterface({ input: child.stdout }).on("line", (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  const parse = (l: string): Record<string, unknown> | undefined => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  const find = (pred: (j: Record<string, unknown>) => boolean): Record<string, unknown> | undefined =>
    lines.map(parse).find((j) => j !== undefined && pred(j));
  return {
    child,
    lines,
    exited,
    waitFor: (pred) =>
      new Promise((res, rej) => {
        const check = (): void => {
          const hit = find(pred);
          if (hit) return res(hit);
          if (child.exitCode !== null || child.signalCode !== null)
            return rej(
              new Error(`dwcp ${args[0]} exited (${child.exitCode ?? child.signalCode}):\n${lines.join("\n")}`),
            );
          waiters.push(check);
        };
        check();
      }),
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** `dwcp replication-service` for `host`, resolved once it logs "serving". */
export async function spawnReplicationService(
  host: string,
  dataDir: string,
  natsUrl: string,
  env: NodeJS.ProcessEnv = {},
): Promise<DwcpProcess> {
  const p = spawnDwcp(["replication-service", "--host", host, "--data-dir", dataDir, "--nats", natsUrl], env);
  await p.waitFor((j) => j["msg"] === "serving");
  return p;
}
