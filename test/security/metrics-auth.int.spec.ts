import { request } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "#common/nats-server.js";
import { spawnService, type ServiceProcess } from "../../cli/stack.js";
import { eventually } from "../support/prometheus.js";

// The metrics and health listener of a real coordinator process: a non-loopback address without
// a token is refused at start-up; with a token every request without it gets 401. NATS is not
// needed: the listener comes up before the service connects (its /readyz then says so). On
// loopback without a token it answers only requests whose Host names loopback (DNS rebinding).

const dir = mkdtempSync(join(tmpdir(), "dwcp-metrics-auth-"));
const TOKEN = "s3cr3t-metrics-token-0123456789";
const procs: ServiceProcess[] = [];

async function coordinator(args: string[]): Promise<ServiceProcess> {
  const deadPort = await freePort(); // nothing listens: the coordinator keeps trying to connect
  const env = {
    ...process.env,
    DWCP_NATS_URL: `nats://127.0.0.1:${deadPort}`,
    DWCP_NATS_INSECURE: "on",
    DWCP_EVENTS_UNSIGNED: "on",
  };
  const p = spawnService(
    `coordinator-${procs.length}`,
    ["coordinator", ...args],
    join(dir, `c${procs.length}.log`),
    env,
  );
  procs.push(p);
  return p;
}

afterAll(async () => {
  await Promise.allSettled(procs.map((p) => p.stop()));
  rmSync(dir, { recursive: true, force: true });
});

describe("metrics listener security", () => {
  it("refuses a non-loopback address without a token file at start-up, with a config error", async () => {
    const p = await coordinator(["--metrics-listen", `0.0.0.0:${await freePort()}`]);
    expect(await p.exited).not.toBe(0);
    expect(readFileSync(p.logFile, "utf8")).toMatch(/not a loopback address: give --metrics-token-file FILE/);
  });

  it("answers 401 to a scrape without the bearer token, and serves it with the token", async () => {
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const port = await freePort();
    // Any address with a token: here every interface, reached over loopback.
    await coordinator(["--metrics-listen", `0.0.0.0:${port}`, "--metrics-token-file", tokenFile]);
    const url = `http://127.0.0.1:${port}`;
    const bearer = { authorization: `Bearer ${TOKEN}` };
    await eventually("the listener", () => fetch(`${url}/healthz`, { headers: bearer }).then((r) => r.status));
    for (const path of ["/metrics", "/healthz", "/readyz"]) {
      const none = await fetch(`${url}${path}`);
      expect(none.status, path).toBe(401);
      expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect(
        (await fetch(`${url}${path}`, { headers: { authorization: "Bearer wrong-token-0123456789" } })).status,
      ).toBe(401);
    }
    const metrics = await fetch(`${url}/metrics`, { headers: bearer });
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toMatch(/^dwcp_lifecycle_state\{state="starting",svc="coordinator"\} 1$/m);
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain(dir);
    // Not connected to NATS: alive, not ready, and /readyz names the failed check.
    expect((await fetch(`${url}/healthz`, { headers: bearer })).status).toBe(200);
    const ready = await fetch(`${url}/readyz`, { headers: bearer });
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { status: string; failed: string[] };
    expect(body.status).toBe("unready");
    expect(body.failed).toContain("nats");
  });

  it("on loopback without a token, answers only requests addressed to loopback", async () => {
    const port = await freePort();
    await coordinator(["--metrics-listen", `127.0.0.1:${port}`]);
    await eventually("the listener", () => fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status));
    const get = (host: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port, path: "/metrics", headers: { host } }, (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on("error", reject);
        req.end();
      });
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`])
      expect((await get(host)).status, host).toBe(200);
    for (const host of [`rebound.example:${port}`, "rebound.example", `127.0.0.1.rebound.example:${port}`]) {
      const refused = await get(host);
      expect(refused.status, host).toBe(403);
      expect(refused.body).toMatch(/Host header must name a loopback address/);
      expect(refused.body).not.toMatch(/dwcp_/);
    }
  });
});
