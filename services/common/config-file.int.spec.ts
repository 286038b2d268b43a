// dwcp.toml read from real files: validation names the file and key, the file goes under the
// environment and flags, and the services' loaders take what only the file sets.
import { chmodSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { coordinatorConfig } from "#coordinator";
import { moverConfig } from "#mover";
import { problemsOf } from "../../test/support/config-problems.js";
import { applyConfigFile, findConfigFile, readConfigFile, withConfigFile } from "./config-file.js";

const dir = mkdtempSync(join(tmpdir(), "dwcp-config-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function toml(text: string, mode = 0o644): string {
  const file = join(dir, `c${n++}.toml`);
  writeFileSync(file, text);
  chmodSync(file, mode);
  return file;
}

describe("dwcp.toml validation", () => {
  it("maps each key to its variable's text", () => {
    const file = toml(
      [
        "[nats]",
        'url = "nats://10.0.0.1:4222"',
        "replicas = 3",
        "[mover]",
        'roots = ["/srv/a", "/srv/b"]',
        "concurrency = 4",
        "native_recv = false",
        "[link]",
        'plaintext = "on"',
      ].join("\n"),
    );
    expect(readConfigFile(file).values).toEqual({
      DWCP_NATS_URL: "nats://10.0.0.1:4222",
      DWCP_REPLICAS: "3",
      DWCP_ROOTS: "/srv/a,/srv/b",
      DWCP_CONCURRENCY: "4",
      DWCP_NATIVE_RECV: "off",
      DWCP_DATA_PLAINTEXT: "on",
    });
  });

  it("names the file, the key and what was expected for every bad key at once", () => {
    const file = toml(
      [
        "[coordinator]",
        'max_attempts = "nine"',
        "max_attemps = 3",
        "[mover]",
        "concurrency = 65",
        "[nats]",
        "replicas = 2",
        "[bogus]",
        "x = 1",
      ].join("\n"),
    );
    expect(problemsOf(() => readConfigFile(file)).sort()).toEqual(
      [
        `${file}: coordinator.max_attempts: expected a whole number of attempts from 1 to 100, got "nine"`,
        expect.stringMatching(
          new RegExp(`^${file}: unknown key coordinator.max_attemps \\(known in \\[coordinator\\]: max_attempts,`),
        ),
        `${file}: mover.concurrency: expected a whole number of batches from 1 to 64, got 65`,
        `${file}: nats.replicas: expected 1, 3 or 5 (replicas), got 2`,
        expect.stringMatching(new RegExp(`^${file}: unknown section \\[bogus\\]`)),
      ].sort(),
    );
  });

  it("reports TOML syntax errors with line and column, and a section that is not a table", () => {
    expect(problemsOf(() => readConfigFile(toml("[nats]\nurl = \n")))).toEqual([
      expect.stringMatching(/: not valid TOML at line 2, column \d+: /),
    ]);
    expect(problemsOf(() => readConfigFile(toml('mover = "x"\n')))).toEqual([
      expect.stringMatching(/: \[mover\] must be a table of settings, got "x"$/),
    ]);
  });

  it("refuses a secret in a file others may read", () => {
    const text = '[link]\nsecret = "0123456789abcdef"\n';
    expect(problemsOf(() => readConfigFile(toml(text, 0o644)))).toEqual([
      expect.stringMatching(/holds link.secret but others may read it \(mode 0644\): chmod 600 /),
    ]);
    expect(readConfigFile(toml(text, 0o600)).values).toEqual({ DWCP_SECRET: "0123456789abcdef" });
  });
});

describe("finding dwcp.toml", () => {
  it("takes --config, else $DWCP_CONFIG, else <data dir>/dwcp.toml if it exists", () => {
    const a = toml("");
    const b = toml("");
    const dataDir = join(dir, "data");
    mkdirSync(dataDir, { recursive: true });
    expect(findConfigFile({ flag: a, env: { DWCP_CONFIG: b } })).toBe(a);
    expect(findConfigFile({ env: { DWCP_CONFIG: b } })).toBe(b);
    expect(findConfigFile({ env: { DWCP_DATA_DIR: dataDir } })).toBeUndefined();
    writeFileSync(join(dataDir, "dwcp.toml"), "");
    expect(findConfigFile({ env: { DWCP_DATA_DIR: dataDir } })).toBe(join(dataDir, "dwcp.toml"));
    expect(findConfigFile({ env: {}, dataDir })).toBe(join(dataDir, "dwcp.toml"));
    expect(problemsOf(() => findConfigFile({ flag: join(dir, "missing.toml"), env: {} }))).toEqual([
      expect.stringMatching(/^--config .*missing.toml does not exist/),
    ]);
  });
});

describe("services take what only the file sets", () => {
  const file = readConfigFile(
    toml(
      [
        "[coordinator]",
        "max_attempts = 9",
        "rpc_timeout_ms = 1500",
        "[nats]",
        "replicas = 3",
        "[mover]",
        "concurrency = 6",
        "local_copy = false",
        'listen = "127.0.0.1:7400"',
        "[link]",
        "plaintext = true",
      ].join("\n"),
    ),
  );

  it("a coordinator", () => {
    const c = coordinatorConfig({}, withConfigFile({}, file));
    expect(c).toMatchObject({ maxAttempts: 9, rpcTimeoutMs: 1500, replicas: 3, backoffBaseMs: 500 });
  });

  it("a mover, with the environment over the file and flags over both", () => {
    const env = withConfigFile({ DWCP_SECRET: "0123456789abcdef", DWCP_CONCURRENCY: "8" }, file);
    const c = moverConfig({ host: "h1", root: ["/tmp"], replicas: "5" }, env);
    expect(c).toMatchObject({ concurrency: 8, replicas: 5, localCopy: false, listenPort: 7400 });
    expect(c.link).toEqual({ mode: "plaintext" });
  });

  it("applying a file sets only the variables left unset, and names the file for child processes", () => {
    const env: Record<string, string | undefined> = { DWCP_MAX_ATTEMPTS: "2", DWCP_RPC_TIMEOUT_MS: "" };
    applyConfigFile(file, env);
    expect(env).toMatchObject({ DWCP_MAX_ATTEMPTS: "2", DWCP_RPC_TIMEOUT_MS: "1500", DWCP_CONFIG: file.path });
  });
});
