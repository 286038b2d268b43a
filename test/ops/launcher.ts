import { spawn, type ChildProcess } from "node:child_process";
import { chownSync, closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { stopChild } from "#common/child-process.js";

// Starts a rendered systemd unit's ExecStart the way systemd would, on a machine without systemd
// as PID 1: as the unit's User and Group, with its Environment, EnvironmentFile and
// WorkingDirectory, and a private TMPDIR (PrivateTmp). Only what dwcp's units use is read.
// Given a network namespace (its host), the command runs there: `ip netns exec <ns>` and then
// `setpriv` to the unit's user (both exec in place, so the child's pid is the service's own and
// SIGTERM reaches it).

export interface Unit {
  file: string;
  execStart: string[];
  user?: string;
  group?: string;
  env: Record<string, string>;
  workingDirectory?: string;
  type: string;
}

/** The [Service] settings of a unit file (later lines add to Environment, replace the rest). */
export function parseUnit(file: string): Unit {
  const unit: Unit = { file, execStart: [], env: {}, type: "simple" };
  let section = "";
  for (const raw of readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1] !== undefined) {
      section = header[1];
      continue;
    }
    if (section !== "Service") continue;
    const eq = line.indexOf("=");
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === "ExecStart") unit.execStart = value.split(/\s+/);
    else if (key === "User") unit.user = value;
    else if (key === "Group") unit.group = value;
    else if (key === "WorkingDirectory") unit.workingDirectory = value;
    else if (key === "Type") unit.type = value;
    else if (key === "Environment") Object.assign(unit.env, envLines([value]));
    else if (key === "EnvironmentFile") Object.assign(unit.env, envLines(readFileSync(value, "utf8").split("\n")));
  }
  return unit;
}

const envLines = (lines: string[]): Record<string, string> =>
  Object.fromEntries(
    lines.flatMap((l) => {
      const i = l.indexOf("=");
      return i > 0 ? [[l.slice(0, i).trim(), l.slice(i + 1).trim()]] : [];
    }),
  );

/** uid or gid of a name, from /etc/passwd or /etc/group. */
function idOf(db: "/etc/passwd" | "/etc/group", name: string): number {
  const row = readFileSync(db, "utf8")
    .split("\n")
    .map((l) => l.split(":"))
    .find((f) => f[0] === name);
  if (row?.[2] === undefined) throw new Error(`no ${name} in ${db}`);
  return Number(row[2]);
}

export interface Launched {
  unit: Unit;
  child: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** Starts the unit, in network namespace `netns` if given; its output goes to <logDir>/<unit>.log. */
export function launch(file: string, logDir: string, netns?: string): Launched {
  const unit = parseUnit(file);
  const [cmd, ...args] = unit.execStart;
  if (cmd === undefined) throw new Error(`${file} has no ExecStart`);
  const uid = unit.user === undefined ? undefined : idOf("/etc/passwd", unit.user);
  const gid = unit.group === undefined ? undefined : idOf("/etc/group", unit.group);
  const name = file.split("/").pop() ?? "unit";
  const tmp = join(logDir, `${name}.tmp`);
  mkdirSync(tmp, { recursive: true, mode: 0o700 });
  if (uid !== undefined) chownSync(tmp, uid, gid ?? 0);
  const logFile = join(logDir, `${name}.log`);
  const fd = openSync(logFile, "a");
  const env = { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...unit.env, TMPDIR: tmp };
  const cwd = unit.workingDirectory !== undefined ? { cwd: unit.workingDirectory } : {};
  const child =
    netns === undefined
      ? spawn(cmd, args, {
          env,
          ...cwd,
          ...(uid !== undefined ? { uid } : {}),
          ...(gid !== undefined ? { gid } : {}),
          stdio: ["ignore", fd, fd],
        })
      : spawn(
          "ip",
          [
            "netns",
            "exec",
            netns,
            "setpriv",
            ...(uid !== undefined ? ["--reuid", String(uid)] : []),
            ...(gid !== undefined ? ["--regid", String(gid), "--clear-groups"] : []),
            "--",
            cmd,
            ...args,
          ],
          { env, ...cwd, stdio: ["ignore", fd, fd] },
        );
  closeSync(fd);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { unit, child, logFile, exited, stop: () => stopChild(child, exited, "SIGTERM", 60_000) };
}
