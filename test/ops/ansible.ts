import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

// Shared by the ops specs: where ops/ansible is and how its tools run.

export const ANSIBLE_DIR = resolve(import.meta.dirname, "../../ops/ansible");
export const ROLES_DIR = join(ANSIBLE_DIR, "roles");
export const PLAYBOOKS = ["playbooks/site.yml", "playbooks/upgrade.yml"];

/** The roles under ops/ansible/roles. */
export const roles = (): string[] =>
  readdirSync(ROLES_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` in ops/ansible with its ansible.cfg; resolves with the exit code and output, whatever it is. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 600_000): Promise<Run> {
  return new Promise((done) => {
    execFile(
      cmd,
      args,
      {
        cwd: ANSIBLE_DIR,
        env: { ...process.env, ANSIBLE_CONFIG: join(ANSIBLE_DIR, "ansible.cfg"), ANSIBLE_NOCOLOR: "1", ...env },
        maxBuffer: 64 * 1024 * 1024,
        timeout: timeoutMs,
      },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
        done({ code, stdout, stderr });
      },
    );
  });
}

/** The top-level keys of a YAML mapping file of `key: value` lines (defaults/main.yml). */
export function topLevelKeys(file: string): string[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .flatMap((l) => {
      const m = /^([a-z_][a-z0-9_]*):/.exec(l);
      return m?.[1] === undefined ? [] : [m[1]];
    });
}

/**
 * Makes the system user (and its group) the units run as, unless it exists: returns useradd's
 * stderr ("" when it succeeded or nothing had to be done).
 */
export async function ensureSystemUser(name: string): Promise<string> {
  if (readFileSync("/etc/passwd", "utf8").includes(`\n${name}:`)) return "";
  const r = await run("useradd", [
    "--system",
    "--user-group",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
    name,
  ]);
  return r.stderr;
}
