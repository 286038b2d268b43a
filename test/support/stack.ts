import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { EventStore, type StoredEvent } from "#common/event-store.js";
import { BIN, Stack, type StackOptions } from "../../cli/stack.js";
import { generateImage, type ImageSpec } from "../../cli/image.js";

/** A private stack (own nats-server on a free port, temp store) for one test file. */
export async function startTestStack(opts: Partial<StackOptions> = {}): Promise<Stack & { cleanup(): Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), "dwcp-test-"));
  const stack = new Stack({ dataDir, hosts: ["a", "b"], replication: false, ...opts });
  try {
    await stack.start();
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return Object.assign(stack, {
    async cleanup() {
      await stack.stop();
      if (!process.env["DWCP_KEEP_TEST_DATA"]) rmSync(dataDir, { recursive: true, force: true });
    },
  });
}

/** What a `dwcp` run printed, and how it exited. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `dwcp <args>` as a user runs it against the test stack: the built binary in a child process,
 * with the cli role's credentials (from the stack's data dir) and the stack's NATS URL.
 */
export function cliOf(stack: Stack): (...args: string[]) => Promise<CliRun> {
  return (...args) => {
    const child = spawn(process.execPath, [BIN, ...args, "--data-dir", stack.opts.dataDir], {
      env: { ...stack.env("cli"), DWCP_NATS_URL: stack.url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve) => child.once("close", (code) => resolve({ code, stdout, stderr })));
  };
}

export async function makeImage(stack: Stack, host: string, rel: string, spec: ImageSpec): Promise<string> {
  const path = join(stack.root(host), rel);
  await mkdir(dirname(path), { recursive: true });
  await generateImage(path, spec);
  return path;
}

export async function eventsOf(stack: Stack, id: string): Promise<StoredEvent[]> {
  return new EventStore(stack.nats.js, stack.nats.jsm).read(id);
}

/** Resolves with the first event of `id` that matches, following the log live. */
export async function waitForEvent(
  stack: Stack,
  id: string,
  match: (e: StoredEvent) => boolean,
  timeoutMs = 60_000,
): Promise<StoredEvent> {
  const store = new EventStore(stack.nats.js, stack.nats.jsm);
  let found!: (e: StoredEvent) => void;
  const result = new Promise<StoredEvent>((r) => (found = r));
  const tail = await store.tail({
    filter: `dwcp.evt.migration.${id}`,
    onEvent: (e) => (match(e) ? found(e) : undefined),
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no matching event for ${id} within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([result, timeout]);
  } finally {
    clearTimeout(timer);
    tail.stop();
  }
}
