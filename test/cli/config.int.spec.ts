// dwcp.toml as a user meets it (bin/dwcp.mjs, child processes): `config --print --json` says where
// each setting comes from (file < environment < flag); a bad file ends any command with exit 2
// naming the key before anything starts; a coordinator takes settings found only in the file.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ConfigReport } from "../../cli/config.js";
import { startSilentNats, type SilentNats } from "../support/silent-nats.js";

const BIN = new URL("../../bin/dwcp.mjs", import.meta.url).pathname;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment without any DWCP_* variable of the test's own. */
const cleanEnv = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("DWCP_")));

function start(
  args: string[],
  o: { cwd: string; env?: NodeJS.ProcessEnv },
): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: o.cwd,
    env: { ...cleanEnv(), ...o.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Run>((resolve) => child.once("close", (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

const dwcp = (args: string[], o: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Run> => start(args, o).done;

/** A NATS that never answers: shows whether a process tried to reach it. */
let trap: SilentNats;
let trapUrl: string;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-test-config-"));
  trap = await startSilentNats();
  trapUrl = trap.url;
});

afterAll(async () => {
  await trap.close();
  rmSync(dir, { recursive: true, force: true });
});

function toml(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  chmodSync(file, 0o600);
  return file;
}

describe("dwcp config --print", () => {
  it("shows each setting's source: default, file, env or flag, and secrets only as set", async () => {
    const file = toml(
      "print.toml",
      [
        "[coordinator]",
        "max_attempts = 9",
        "[mover]",
        "concurrency = 3",
        "[nats]",
        "replicas = 3",
        "[link]",
        'secret = "file-secret-0123456789"',
      ].join("\n"),
    );
    const r = await dwcp(["config", "--print", "--json", "--config", file, "--replicas", "5"], {
      cwd: dir,
      env: { DWCP_CONCURRENCY: "4", DWCP_METRICS_TOKEN_FILE: "/etc/dwcp/token" },
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as ConfigReport;
    const by = new Map(report.settings.map((s) => [s.variable, s]));
    expect(report.file).toBe(file);
    expect(by.get("DWCP_MAX_ATTEMPTS")).toMatchObject({ value: "9", source: "file", from: file });
    expect(by.get("DWCP_CONCURRENCY")).toMatchObject({ value: "4", source: "env", from: "DWCP_CONCURRENCY" });
    expect(by.get("DWCP_REPLICAS")).toMatchObject({ value: "5", source: "flag", from: "--replicas" });
    expect(by.get("DWCP_BACKOFF_MAX_MS")).toMatchObject({ value: "30000", source: "default" });
    expect(by.get("DWCP_SECRET")).toEqual(expect.objectContaining({ set: true, secret: true, source: "file" }));
    expect(by.get("DWCP_METRICS_TOKEN_FILE")).toEqual(expect.objectContaining({ set: true, source: "env" }));
    expect(by.get("DWCP_TLS_KEY")).toEqual(expect.objectContaining({ set: false, source: "default" }));
    expect(r.stdout).not.toContain("file-secret");
    expect(r.stdout).not.toContain("/etc/dwcp/token");

    const text = await dwcp(["config", "--print", "--config", file], { cwd: dir });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^coordinator\.max_attempts +DWCP_MAX_ATTEMPTS +9 +file \//m);
    expect(text.stdout).toMatch(/^link\.secret +DWCP_SECRET +\(set\) +file /m);
    expect(text.stdout).not.toContain("file-secret");
  });

  it("finds <data dir>/dwcp.toml without --config", async () => {
    const dataDir = mkdtempSync(join(dir, "data-"));
    writeFileSync(join(dataDir, "dwcp.toml"), '[process]\nlog_level = "debug"\n');
    const r = await dwcp(["config", "--print", "--json", "--data-dir", dataDir], { cwd: dir });
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as ConfigReport;
    expect(report.file).toBe(join(dataDir, "dwcp.toml"));
    expect(report.settings.find((s) => s.key === "process.log_level")).toMatchObject({
      value: "debug",
      source: "file",
    });
  });
});

describe("a bad dwcp.toml", () => {
  it("ends a service and a client command with exit 2 naming the key, before anything starts", async () => {
    const file = toml("bad.toml", `[nats]\nurl = "${trapUrl}"\n[coordinator]\nmax_attempts = "many"\nretries = 3\n`);
    const work = mkdtempSync(join(dir, "work-"));
    const before = trap.connections();
    for (const args of [["coordinator"], ["status"]]) {
      const r = await dwcp([...args, "--config", file], { cwd: work, env: { DWCP_NATS_URL: trapUrl } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`${file}: coordinator.max_attempts: expected a whole number of attempts`);
      expect(r.stderr).toContain(`${file}: unknown key coordinator.retries`);
      expect(r.stdout).toBe("");
    }
    expect(trap.connections(), "no process reached NATS").toBe(before);
    expect(readdirSync(work), "no file was written").toEqual([]);
  });
});

describe("a coordinator started with its settings only in dwcp.toml", () => {
  it("uses them: it dials the file's NATS URL without credentials the file waives", async () => {
    const file = toml(
      "coordinator.toml",
      [
        `[nats]\nurl = "${trapUrl}"\ninsecure = true`,
        "[events]\nunsigned = true",
        "[coordinator]\nmax_attempts = 7",
      ].join("\n"),
    );
    const reached = trap.nextConnection();
    const { child, done } = start(["coordinator", "--config", file], { cwd: dir });
    const first = await Promise.race([reached.then(() => "dialed" as const), done]);
    expect(first, typeof first === "string" ? "" : first.stderr).toBe("dialed");
    child.kill("SIGKILL");
    await done;
  });
});
