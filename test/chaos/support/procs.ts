import { execFileSync } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Every process and mount the suite creates is written to a ledger that global-setup.ts reads
 * after the run, so that even a crashed worker leaves nothing behind. The marker in each
 * process's environment makes sure a recycled PID is never killed by mistake.
 */
export const RUN_MARKER = "DWCP_CHAOS_RUN";
export const runId = (): string => process.env[RUN_MARKER] ?? `local-${process.pid}`;
export const ledgerPath = (id = runId()): string => join(tmpdir(), `dwcp-chaos-${id}.ledger`);

export function trackPid(pid: number | undefined): void {
  if (pid !== undefined) appendFileSync(ledgerPath(), `pid ${pid}\n`);
}

export function trackMount(path: string): void {
  appendFileSync(ledgerPath(), `mount ${path}\n`);
}

export function markedEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, [RUN_MARKER]: runId() };
}

function belongsToRun(pid: number, id: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`${RUN_MARKER}=${id}`);
  } catch {
    return false;
  }
}

/** Kills leftover processes (SIGCONT first: a stopped process ignores SIGTERM) and unmounts. */
export function sweep(id = runId()): { killed: number; unmounted: number } {
  let lines: string[];
  try {
    lines = readFileSync(ledgerPath(id), "utf8").split("\n");
  } catch {
    return { killed: 0, unmounted: 0 };
  }
  let killed = 0;
  let unmounted = 0;
  for (const line of lines) {
    const [kind, arg] = line.split(" ");
    if (kind === "pid" && arg && belongsToRun(Number(arg), id)) {
      try {
        process.kill(Number(arg), "SIGCONT");
        process.kill(Number(arg), "SIGKILL");
        killed++;
      } catch {
        /* already gone */
      }
    }
    if (kind === "mount" && arg && readFileSync("/proc/mounts", "utf8").includes(` ${arg} `)) {
      try {
        execFileSync("umount", ["-l", arg], { stdio: "ignore" });
        unmounted++;
      } catch {
        /* not ours to fix */
      }
    }
  }
  return { killed, unmounted };
}
