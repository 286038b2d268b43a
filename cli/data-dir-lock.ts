import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DwcpError } from "#common/errors.js";

/** Another live process runs a stack on this data dir. */
export class DataDirLockedError extends DwcpError {
  readonly code = "DATA_DIR_LOCKED" as const;
  readonly retryable = false;
}

interface Holder {
  pid: number;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat field 22): a reused pid differs. */
  startTicks: string;
  command: string;
  since: string;
}

/** A process's start time (clock ticks since boot), or undefined if it is gone. */
function startTicksOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 2 (comm) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

const alive = (h: Holder): boolean => startTicksOf(h.pid) === h.startTicks;

/**
 * Takes <dataDir>/lock for this process while it runs a stack there: created exclusively (a
 * hard link, which fails if the lock exists) with this process's pid and start time. A lock
 * whose holder is gone (no such process, or the pid now names a process started at another
 * time) is stale and taken over, so a killed stack does not block the next `dwcp up`. Throws
 * DataDirLockedError naming the live holder.
 */
export function lockDataDir(dataDir: string, command: string): { release(): void } {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, "lock");
  const me: Holder = {
    pid: process.pid,
    startTicks: startTicksOf(process.pid) ?? "",
    command,
    since: new Date().toISOString(),
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    // Written whole beside it, then linked into place: link fails if the lock exists, and a
    // reader never sees a half-written holder.
    const mine = `${file}.${process.pid}`;
    writeFileSync(mine, JSON.stringify(me), { mode: 0o600 });
    try {
      linkSync(mine, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = readHolder(file);
      if (holder !== undefined && alive(holder))
        throw new DataDirLockedError(
          `data dir ${dataDir} is in use by \`${holder.command}\` (pid ${holder.pid}, since ${holder.since}): ` +
            "stop that stack first (Ctrl-C), or pass another --data-dir",
        );
      rmSync(file, { force: true }); // stale: its holder is gone
      continue;
    } finally {
      rmSync(mine, { force: true });
    }
    return {
      release: () => {
        if (readHolder(file)?.pid === me.pid) rmSync(file, { force: true });
      },
    };
  }
  throw new DataDirLockedError(`data dir ${dataDir}: could not take ${file}; another stack is starting there`);
}

function readHolder(file: string): Holder | undefined {
  try {
    const h = JSON.parse(readFileSync(file, "utf8")) as Partial<Holder>;
    return typeof h.pid === "number" && typeof h.startTicks === "string"
      ? { pid: h.pid, startTicks: h.startTicks, command: String(h.command), since: String(h.since) }
      : undefined;
  } catch {
    return undefined; // half-written or garbage: treated as stale
  }
}
