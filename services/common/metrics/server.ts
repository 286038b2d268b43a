import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ConfigError } from "../errors.js";
import type { Logger } from "../logger.js";
import { HOST_REFUSED, isLoopbackHost } from "../loopback-host.js";
import type { MetricsSettings } from "./config.js";
import { currentLifecycle, registry } from "./registry.js";

/** One readiness check: true when it holds, else why not (a short sentence, no secrets or paths). */
export type ReadinessCheck = () => true | string | Promise<true | string>;

/** How long one readiness check may take before it counts as failed. */
const CHECK_TIMEOUT_MS = 2_000;

export interface MetricsServer {
  /** HOST:PORT it listens on (the port resolved when 0 was asked for). */
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves the process's metrics (Prometheus text format) on GET /metrics, liveness on /healthz
 * (the lifecycle state: 200 while starting, running or draining; 503 once stopped or failed) and
 * readiness on /readyz (200 when every check holds, else 503 naming each failed check), all as
 * JSON except /metrics. With a token every request must carry `Authorization: Bearer <token>`,
 * else it gets 401.
 */
export async function startMetricsServer(o: {
  settings: MetricsSettings;
  log: Logger;
  checks: Record<string, ReadinessCheck>;
}): Promise<MetricsServer> {
  const expected = o.settings.token === undefined ? undefined : digest(o.settings.token);
  const server = createServer((req, res) => {
    if (expected !== undefined && !authorized(req, expected)) {
      res.writeHead(401, { "www-authenticate": 'Bearer realm="dwcp"', "content-type": "application/json" });
      res.end(JSON.stringify({ error: "a bearer token is required" }));
      return;
    }
    // Without a token the listener is on loopback: answer only requests addressed to loopback.
    if (expected === undefined && !isLoopbackHost(req.headers.host)) {
      res.writeHead(403, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: HOST_REFUSED }));
      return;
    }
    route(req, res, o.checks).catch((err: unknown) => {
      o.log.warn({ err, path: req.url }, "metrics request failed");
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "internal error" }));
    });
  });
  // Scrapers keep connections alive; a closing service must not wait for them.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.settings.port, o.settings.host, () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((err: unknown) => {
    const why = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError([`--metrics-listen ${o.settings.host}:${o.settings.port}: cannot listen (${why})`]);
  });
  const port = (server.address() as AddressInfo).port;
  const host = o.settings.host.includes(":") ? `[${o.settings.host}]` : o.settings.host;
  const address = `${host}:${port}`;
  o.log.info({ metrics: address, auth: expected !== undefined }, "metrics and health listening");
  return {
    address,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function route(req: IncomingMessage, res: ServerResponse, checks: Record<string, ReadinessCheck>): Promise<void> {
  const path = (req.url ?? "/").split("?")[0] ?? "/";
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD", "content-type": "application/json" });
    res.end(JSON.stringify({ error: "only GET" }));
    return;
  }
  switch (path) {
    case "/metrics": {
      const body = await registry.metrics();
      res.writeHead(200, { "content-type": registry.contentType });
      res.end(body);
      return;
    }
    case "/healthz": {
      const state = currentLifecycle();
      const alive = state !== "failed" && state !== "stopped";
      json(res, alive ? 200 : 503, { status: alive ? "alive" : "down", state });
      return;
    }
    case "/readyz": {
      const results = await runChecks(checks);
      const failed = Object.entries(results)
        .filter(([, r]) => r !== "ok")
        .map(([name]) => name);
      json(res, failed.length === 0 ? 200 : 503, {
        status: failed.length === 0 ? "ready" : "unready",
        state: currentLifecycle(),
        failed,
        checks: results,
      });
      return;
    }
    default:
      json(res, 404, { error: "not found; try /metrics, /healthz or /readyz" });
  }
}

/** Every check at once, each bounded by CHECK_TIMEOUT_MS: "ok" or why not. */
async function runChecks(checks: Record<string, ReadinessCheck>): Promise<Record<string, string>> {
  const state = currentLifecycle();
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]): Promise<[string, string]> => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<string>((r) => (timer = setTimeout(() => r("no answer in time"), CHECK_TIMEOUT_MS)));
      try {
        const r = await Promise.race([Promise.resolve().then(check), timeout]);
        return [name, r === true ? "ok" : r];
      } catch (err) {
        return [name, (err as Error).message || "failed"];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return { lifecycle: state === "running" ? "ok" : `the service is ${state}`, ...Object.fromEntries(entries) };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}

const digest = (s: string): Buffer => createHash("sha256").update(s).digest();

/** Compares digests in constant time, so the answer's timing says nothing about the token. */
function authorized(req: IncomingMessage, expected: Buffer): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
  return m?.[1] !== undefined && timingSafeEqual(digest(m[1]), expected);
}
