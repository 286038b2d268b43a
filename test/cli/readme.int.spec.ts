// The README's session runs as written: its shell block is read from README.md (so the two cannot
// drift) and run by bash, line by line, in a directory whose `.dwcp` is a running stack's data
// dir, with `dwcp` on PATH as the built binary. Only the NATS URL `dwcp up` would print is filled in.
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN } from "../../cli/stack.js";
import { startTestStack } from "../support/stack.js";

const README = resolve(import.meta.dirname, "../../README.md");

/** The lines of the first ```sh block after the paragraph that begins "A session". */
function sessionBlock(): string[] {
  const text = readFileSync(README, "utf8");
  const at = text.indexOf("\nA session");
  expect(at, "README.md has its session").toBeGreaterThan(0);
  const open = text.indexOf("```sh\n", at);
  const close = text.indexOf("\n```", open + 6);
  return text
    .slice(open + 6, close)
    .split("\n")
    .filter((l) => l.trim() !== "");
}

let dir: string;
let stack: Awaited<ReturnType<typeof startTestStack>>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-readme-"));
  stack = await startTestStack({ dataDir: join(dir, ".dwcp"), replication: true });
  writeFileSync(join(dir, "dwcp"), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
  chmodSync(join(dir, "dwcp"), 0o755);
}, 120_000);
afterAll(async () => {
  await stack?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

function bash(line: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn("bash", ["-euo", "pipefail", "-c", line], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((r) => child.once("close", (code) => r({ code, stdout, stderr })));
}

describe("the README's session", () => {
  it("runs as written, every line exiting 0", async () => {
    const lines = sessionBlock();
    expect(lines.filter((l) => l.startsWith("dwcp ")).length).toBeGreaterThanOrEqual(8);
    // A user's environment: none of the test stack's role variables, `dwcp` on PATH.
    const env: NodeJS.ProcessEnv = { PATH: `${dir}:${process.env["PATH"] ?? ""}`, HOME: dir, TMPDIR: tmpdir() };
    for (const raw of lines) {
      const line = raw.startsWith("export DWCP_NATS_URL=") ? `export DWCP_NATS_URL=${stack.url}` : raw;
      if (line.startsWith("export ")) {
        const m = /^export (\w+)=(\S+)/.exec(line);
        if (m?.[1] !== undefined && m[2] !== undefined) env[m[1]] = m[2];
        continue;
      }
      const r = await bash(line, env);
      expect(r.code, `${line}\n${r.stderr}`).toBe(0);
    }
    // What the session left: the top snapshot parses and shows the migration completed.
    const top = JSON.parse(readFileSync(join(dir, "top.json"), "utf8")) as {
      migrations: { migrationId: string; state: string }[];
    };
    expect(top.migrations.find((m) => m.migrationId === "web-1-move")?.state).toBe("completed");
  });
});
