// The web dashboard (`dwcp dashboard`, the built binary) off loopback: refused at start-up without
// a token file (or with a guessable token), and with one its data (the event stream, the migration
// API) answers 401 to a request without the bearer token; the page itself carries no data. It
// reads NATS as the observer, with the stack's credentials found under --data-dir. On loopback
// without a token it answers only requests whose Host names loopback (DNS rebinding).
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "#common/nats-server.js";
import { BIN } from "../../cli/stack.js";
import { startTestStack } from "../support/stack.js";

const TOKEN = "dashboard-token-0123456789abcdef";
let stack: Awaited<ReturnType<typeof startTestStack>>;
const children: ChildProcess[] = [];

/** The environment without any role's credentials: the binary finds the observer's under --data-dir. */
function plainEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ["DWCP_NKEY_FILE", "DWCP_TLS_CA", "DWCP_TLS_CERT", "DWCP_TLS_KEY", "DWCP_NATS_INSECURE"])
    delete env[k];
  return env;
}

function dashboard(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(
    process.execPath,
    [BIN, "dashboard", ...args, "--data-dir", stack.opts.dataDir, "--nats", stack.url],
    {
      env: plainEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  children.push(child);
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, output: () => out, exited };
}

/** Resolves with the output once it matches (the process printing its address), or rejects when it exits. */
function printed(d: ReturnType<typeof dashboard>, re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${String(re)} in: ${d.output()}`)), timeoutMs);
    const check = (): void => {
      const m = re.exec(d.output());
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    d.child.stdout?.on("data", check);
    void d.exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`dwcp dashboard exited: ${d.output()}`));
    });
    check();
  });
}

beforeAll(async () => {
  stack = await startTestStack();
}, 90_000);

afterAll(async () => {
  const running = children.filter((c) => c.exitCode === null && c.signalCode === null);
  const gone = running.map((c) => new Promise<void>((r) => c.once("exit", () => r())));
  for (const c of running) c.kill("SIGTERM");
  await Promise.all(gone);
  await stack?.cleanup();
});

describe("the dashboard's listener security", () => {
  it("refuses a non-loopback address without a token file, before it connects anywhere", async () => {
    const d = dashboard(["--listen", `0.0.0.0:${await freePort()}`]);
    expect(await d.exited).toBe(2);
    expect(d.output()).toMatch(/not a loopback address: give --token-file FILE/);
  });

  it("refuses a token file holding a guessable token", async () => {
    const short = join(stack.opts.dataDir, "short-token");
    writeFileSync(short, "abc\n", { mode: 0o600 });
    const d = dashboard(["--listen", `0.0.0.0:${await freePort()}`, "--token-file", short]);
    expect(await d.exited).toBe(2);
    expect(d.output()).toMatch(/must hold one token of at least 16 characters/);
  });

  it("answers 401 to data requests without the bearer token and streams snapshots with it", async () => {
    const tokenFile = join(stack.opts.dataDir, "dashboard-token");
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const port = await freePort();
    const d = dashboard(["--listen", `0.0.0.0:${port}`, "--token-file", tokenFile]);
    await printed(d, /dashboard: http:\/\/0\.0\.0\.0:\d+\//);
    expect(d.output()).not.toContain(TOKEN);
    const url = `http://127.0.0.1:${port}`;
    for (const path of ["/events", "/api/migration/some-id"]) {
      const none = await fetch(`${url}${path}`);
      expect(none.status, path).toBe(401);
      expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
      const wrong = await fetch(`${url}${path}`, { headers: { authorization: "Bearer wrong-token-0123456789abc" } });
      expect(wrong.status, path).toBe(401);
    }
    // The page and its scripts hold no data: anyone who reaches the port gets them.
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).not.toContain(stack.opts.dataDir);

    const abort = new AbortController();
    const events = await fetch(`${url}/events`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      signal: abort.signal,
    });
    expect(events.status).toBe(200);
    expect(events.headers.get("content-type")).toMatch(/^text\/event-stream/);
    // The first snapshot, read as the observer: both movers of the registry, no problem reading.
    const reader = (events.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/\ndata: .*\n\n/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    abort.abort();
    const data = /\ndata: (.*)\n\n/.exec(text)?.[1] ?? "{}";
    const snapshot = JSON.parse(data) as { movers: Array<{ host: string }>; problems: string[] };
    expect(snapshot.movers.map((m) => m.host)).toEqual(["a", "b"]);
    expect(snapshot.problems).toEqual([]);
    d.child.kill("SIGTERM");
    expect(await d.exited).toBe(0);
  });

  it("on loopback without a token, answers only requests addressed to loopback", async () => {
    const port = await freePort();
    const d = dashboard(["--listen", `127.0.0.1:${port}`]);
    await printed(d, /dashboard: http:\/\/127\.0\.0\.1:\d+\//);
    const get = (path: string, host: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port, path, headers: { host } }, (res) => {
          let body = "";
          res.on("data", (c: Buffer) => (body += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on("error", reject);
        req.end();
      });
    expect((await get("/api/migration/none", `127.0.0.1:${port}`)).status).toBe(404);
    expect((await get("/", `localhost:${port}`)).status).toBe(200);
    for (const path of ["/", "/events", "/api/migration/none"]) {
      const refused = await get(path, `rebound.example:${port}`);
      expect(refused.status, path).toBe(403);
      expect(refused.body).toMatch(/Host header must name a loopback address/);
    }
    d.child.kill("SIGTERM");
    expect(await d.exited).toBe(0);
  });
});
