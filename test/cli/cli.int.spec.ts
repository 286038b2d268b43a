// The dwcp command as a user runs it (bin/dwcp.mjs, child processes): --help for every command and
// every usage mistake answer before anything happens (no file created, no connection made), and a
// NATS that cannot be used ends a command quickly with what to do.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { COMMANDS, flagsOf } from "../../cli/commands.js";
import { startSilentNats, type SilentNats } from "../support/silent-nats.js";

const BIN = new URL("../../bin/dwcp.mjs", import.meta.url).pathname;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function dwcp(args: string[], o: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: o.cwd,
    env: { ...process.env, ...o.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) =>
    child.once("close", (code) => resolve({ code, stdout, stderr, ms: Date.now() - started })),
  );
}

/** A NATS that hangs: counts the connections it accepts and never answers. */
let trap: SilentNats;
let trapUrl: string;
/** Connections to the trap before the current test's fresh(). */
let connectionsBefore = 0;
let dir: string;
/** Where a command would write: cwd, data dir and TMPDIR all point into it. */
let work: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-test-cli-"));
  trap = await startSilentNats();
  trapUrl = trap.url;
});

afterAll(async () => {
  await trap.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Connections to the trap since the current test's fresh(). */
const connections = (): number => trap.connections() - connectionsBefore;

/** A fresh empty directory as cwd, TMPDIR and data dir, and the trap as the NATS URL. */
function fresh(): void {
  work = mkdtempSync(join(dir, "w-"));
  env = { DWCP_NATS_URL: trapUrl, DWCP_DATA_DIR: join(work, "data"), TMPDIR: work };
  connectionsBefore = trap.connections();
}

describe("help runs before anything else", () => {
  it.each(COMMANDS.map((c) => c.name))("dwcp %s --help: usage, every flag, an example; nothing else", async (name) => {
    fresh();
    const cmd = COMMANDS.find((c) => c.name === name);
    if (!cmd) throw new Error(name);
    const withDataDir = flagsOf(cmd).some((f) => f.name === "data-dir") ? ["--data-dir", join(work, "data")] : [];
    const withNats = flagsOf(cmd).some((f) => f.name === "nats") ? ["--nats", trapUrl] : [];
    for (const args of [
      [name, "--help", ...withDataDir, ...withNats],
      ["help", name],
      [name, "-h"],
    ]) {
      const r = await dwcp(args, { cwd: work, env });
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(0);
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(new RegExp(`^usage: dwcp ${name}`));
      expect(r.stdout).toMatch(/^examples?:$/m);
      for (const f of flagsOf(cmd)) expect(r.stdout).toContain(`--${f.name}`);
    }
    expect(readdirSync(work), "files created by --help").toEqual([]);
    expect(connections(), "connections made by --help").toBe(0);
  });

  it("dwcp, dwcp --help and dwcp help list every command; --version prints the version", async () => {
    fresh();
    for (const args of [[], ["--help"], ["help"]]) {
      const r = await dwcp(args, { cwd: work, env });
      expect(r.code).toBe(0);
      for (const c of COMMANDS) expect(r.stdout).toContain(`  ${c.name} `);
    }
    const v = await dwcp(["--version"], { cwd: work, env });
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^dwcp \d+\.\d+\.\d+/);
    const bash = await dwcp(["completion", "bash"], { cwd: work, env });
    expect(bash.stdout).toContain("complete -o default -F _dwcp dwcp");
    expect(readdirSync(work)).toEqual([]);
    expect(connections()).toBe(0);
  });
});

describe("a usage mistake exits 2 with what was wrong, before any work", () => {
  const cases: Array<[string[], RegExp]> = [
    [["up", "--sites", "abc"], /--sites must be a whole number of 1 or more, got "abc"/],
    [["up", "--nats-port", "abc"], /--nats-port must be a TCP port from 1 to 65535, got "abc"/],
    [["restore-log", "--in", "missing.jsonl"], /--in: missing\.jsonl does not exist/],
    [["drill", "--size", "banana"], /--size must be a size like 4M, 64K or 1G, got "banana"/],
    [["demo", "--size", "12 parsecs"], /--size must be a size/],
    [["migrate", "--vm", "x", "--from", "a:disk.img=ram", "--to", "b:in"], /unknown volume kind "ram"/],
    [
      ["migrate", "--vm", "x", "--from", "a:d.img", "--to", "b:in", "--bandwidth-limit", "100Mbit/s"],
      /--bandwidth-limit must be a rate like 100M\/s or 1G\/s, got "100Mbit\/s"/,
    ],
    [["migrate", "--vm", "x", "--from", "a:d.img", "--to", "b:in", "--chunk-size", "1K"], /^dwcp: --chunk-size: /],
    [["migrate", "--vm", "a.b", "--from", "a:d.img", "--to", "b:in"], /^dwcp: --vm: /],
    [["migrate", "--vm", "x", "--live", "--from", "a", "--to", "b:in", "--incremental"], /--incremental .* --live/],
    [["replicate", "--vm", "x", "--from", "a:d", "--to", "b:s", "--keep-for", "soon"], /--keep-for must be a duration/],
    [["status", "--bogus"], /Unknown option '--bogus'; run dwcp status --help/],
    [["cancel"], /cancel needs ID/],
    [["federation", "stats"], /must be one of status/],
    [["nosuch"], /unknown command "nosuch"; run dwcp help/],
    [["help", "nosuch"], /unknown command "nosuch"/],
  ];
  it.each(cases)("dwcp %j", async (args, message) => {
    fresh();
    const r = await dwcp(args, { cwd: work, env: { ...env, DWCP_EVENTS_UNSIGNED: "on", DWCP_NATS_INSECURE: "on" } });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/options\.|bandwidthLimitBytesPerSec|chunkSizeBytes/);
    expect(r.stdout).toBe("");
    expect(readdirSync(work)).toEqual([]);
    expect(connections()).toBe(0);
  });
});

describe("a NATS that cannot be used ends a command at once, saying what to do", () => {
  let nats: NatsServerHandle;
  beforeAll(async () => {
    nats = await startNatsServer({ storeDir: join(dir, "nats") });
  });
  afterAll(async () => {
    await nats?.stop();
  });
  const insecure = { DWCP_EVENTS_UNSIGNED: "on", DWCP_NATS_INSECURE: "on" };

  it("a server that never answers: cannot reach NATS within --connect-timeout", async () => {
    fresh();
    const r = await dwcp(["status", "--connect-timeout", "1s"], { cwd: work, env: { ...env, ...insecure } });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`cannot reach NATS at ${trapUrl}`);
    expect(r.stderr).toContain("dwcp up");
    expect(r.ms).toBeLessThan(15_000);
    expect(connections()).toBeGreaterThan(0); // it did try
  });

  it("nothing listening: cannot reach NATS", async () => {
    fresh();
    const closed = "nats://127.0.0.1:1";
    for (const args of [["status"], ["migrate", "--vm", "x", "--from", "a:d.img", "--to", "b:in", "--wait"]]) {
      const r = await dwcp([...args, "--nats", closed], { cwd: work, env: { ...env, ...insecure } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`cannot reach NATS at ${closed}`);
    }
  });

  it("a NATS without dwcp's streams: run dwcp init", async () => {
    fresh();
    for (const args of [["status"], ["cancel", "nosuch"]]) {
      const r = await dwcp([...args, "--nats", nats.url], { cwd: work, env: { ...env, ...insecure } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`no dwcp streams at ${nats.url}: run \`dwcp init\``);
    }
  });
});
