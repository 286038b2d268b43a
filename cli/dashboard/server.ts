import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { Id } from "#schemas/index.js";
import { parseHostPort } from "#common/config.js";
import { ConfigError } from "#common/errors.js";
import { HOST_REFUSED, isLoopbackHost } from "#common/loopback-host.js";
import { isLoopback } from "#common/metrics/config.js";
import type { DashboardSnapshot } from "./collector.js";

// The dashboard's HTTP side: the page and its assets (no data in them, served to anyone who
// reaches the port), and the data (/events, a server-sent event stream of snapshots; /api/...),
// which off loopback needs the bearer token of --token-file, as the metrics listeners do.

/** A bearer token shorter than this is refused: it would be guessable. */
const MIN_TOKEN_CHARS = 16;

export interface DashboardSettings {
  host: string;
  port: number;
  /** Every data request must present it; undefined on loopback without a token file. Never logged. */
  token: string | undefined;
}

/**
 * The listener's settings, checked: HOST:PORT well formed, and an address other than loopback
 * only with a token file of at least 16 characters (anyone who reaches the port would otherwise
 * read every migration). Every problem is listed at once.
 */
export function dashboardSettings(o: {
  listen: string;
  tokenFile?: string | undefined;
  /** The flag that gave `listen`, for messages; `dwcp up`'s takes no token file (loopback only). */
  flag?: "--listen" | "--dashboard-listen";
}): DashboardSettings {
  const flag = o.flag ?? "--listen";
  const problems: string[] = [];
  const hp = parseHostPort(o.listen);
  if (hp === undefined) problems.push(`${flag} must be HOST:PORT, got "${o.listen}"`);
  let token: string | undefined;
  if (o.tokenFile !== undefined) {
    try {
      token = readFileSync(o.tokenFile, "utf8").trim();
      if (token.length < MIN_TOKEN_CHARS || /\s/.test(token))
        problems.push(`--token-file ${o.tokenFile} must hold one token of at least ${MIN_TOKEN_CHARS} characters`);
    } catch (err) {
      problems.push(`--token-file ${o.tokenFile} cannot be read: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
    }
  } else if (hp !== undefined && !isLoopback(hp.host))
    problems.push(
      flag === "--listen"
        ? `--listen ${o.listen} is not a loopback address: give --token-file FILE holding a bearer token ` +
            "(16+ characters) for the dashboard's data, or listen on 127.0.0.1"
        : `--dashboard-listen ${o.listen} is not a loopback address: dwcp up serves its dashboard on loopback ` +
            "only; for another address run dwcp dashboard --listen HOST:PORT --token-file FILE",
    );
  if (problems.length > 0 || hp === undefined) throw new ConfigError(problems);
  return { ...hp, token };
}

/** What the server asks of the NATS side. */
export interface DashboardSource {
  /** The latest snapshot (the collector's, refreshed once a second). */
  latest(): DashboardSnapshot | undefined;
  /** Calls `listener` with each new snapshot until the returned function is called. */
  subscribe(listener: (s: DashboardSnapshot) => void): () => void;
  /** One migration's events with their stream sequences; undefined when there is none. */
  migration(id: string): Promise<unknown>;
}

export interface DashboardServer {
  /** http://HOST:PORT/ */
  url: string;
  port: number;
  close(): Promise<void>;
}

const WEB_DIR = resolve(import.meta.dirname, import.meta.url.endsWith(".ts") ? "../../web" : "../../../web");
const require = createRequire(import.meta.url);

/** The page's files: path -> where it is and its content type. */
const ASSETS: Record<string, { file: () => string; type: string }> = {
  "/": { file: () => resolve(WEB_DIR, "index.html"), type: "text/html; charset=utf-8" },
  "/app.js": { file: () => resolve(WEB_DIR, "app.js"), type: "text/javascript; charset=utf-8" },
  "/app.css": { file: () => resolve(WEB_DIR, "app.css"), type: "text/css; charset=utf-8" },
  "/uplot.js": { file: () => require.resolve("uplot/dist/uPlot.iife.min.js"), type: "text/javascript; charset=utf-8" },
  "/uplot.css": { file: () => require.resolve("uplot/dist/uPlot.min.css"), type: "text/css; charset=utf-8" },
};

/** No script, style or connection from anywhere but this server; uPlot sets element styles. */
const SECURITY_HEADERS = {
  "content-security-policy": [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; "),
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

/** Unsent bytes of one event stream past which its reader is dropped (it reconnects when it can). */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

/** A comment line on an idle event stream, so proxies and the browser keep it open. */
const KEEPALIVE_MS = 15_000;

export async function startDashboardServer(
  settings: DashboardSettings,
  source: DashboardSource,
): Promise<DashboardServer> {
  const expected = settings.token === undefined ? undefined : digest(settings.token);
  const server = createServer((req, res) => {
    route(req, res, source, expected).catch(() => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json", ...SECURITY_HEADERS });
      res.end(JSON.stringify({ error: "internal error" }));
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(settings.port, settings.host, () => {
      server.off("error", fail);
      ok();
    });
  }).catch((err: unknown) => {
    const why = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError([`dashboard ${settings.host}:${settings.port}: cannot listen (${why})`]);
  });
  const port = (server.address() as AddressInfo).port;
  const host = settings.host.includes(":") ? `[${settings.host}]` : settings.host;
  return {
    url: `http://${host}:${port}/`,
    port,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}

async function route(
  req: IncomingMessage,
  res: ServerResponse,
  source: DashboardSource,
  expected: Buffer | undefined,
): Promise<void> {
  const path = (req.url ?? "/").split("?")[0] ?? "/";
  if (expected === undefined && !isLoopbackHost(req.headers.host)) {
    json(res, 403, { error: HOST_REFUSED });
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    json(res, 405, { error: "only GET" }, { allow: "GET, HEAD" });
    return;
  }
  const asset = Object.hasOwn(ASSETS, path) ? ASSETS[path] : undefined;
  if (asset !== undefined) {
    const body = await readFile(asset.file());
    res.writeHead(200, { "content-type": asset.type, "cache-control": "no-cache", ...SECURITY_HEADERS });
    res.end(body);
    return;
  }
  if (expected !== undefined && !authorized(req, expected)) {
    json(res, 401, { error: "a bearer token is required" }, { "www-authenticate": 'Bearer realm="dwcp"' });
    return;
  }
  if (path === "/events") {
    events(req, res, source);
    return;
  }
  const m = /^\/api\/migration\/([^/]*)$/.exec(path);
  if (m) {
    const id = decodeURIComponentSafe(m[1] ?? "");
    if (id === undefined || !Id.safeParse(id).success) {
      json(res, 400, { error: "a migration id is 1-64 characters of A-Z a-z 0-9 _ -" });
      return;
    }
    const found = await source.migration(id);
    if (found === undefined) json(res, 404, { error: "no migration with that id" });
    else json(res, 200, found);
    return;
  }
  json(res, 404, { error: "not found" });
}

/** Server-sent events: the latest snapshot at once, then each new one, as `snapshot` events. */
function events(req: IncomingMessage, res: ServerResponse, source: DashboardSource): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-store",
    connection: "keep-alive",
    ...SECURITY_HEADERS,
  });
  const send = (s: DashboardSnapshot): void => {
    // A page that does not read (a stalled tab, a slow link) is cut off rather than buffered for.
    if (res.writableLength > MAX_BUFFERED_BYTES) {
      res.destroy();
      return;
    }
    res.write(`event: snapshot\ndata: ${JSON.stringify(s)}\n\n`);
  };
  const first = source.latest();
  if (first !== undefined) send(first);
  else res.write(": waiting for the first snapshot\n\n");
  const unsubscribe = source.subscribe(send);
  const keepalive = setInterval(() => res.write(": keepalive\n\n"), KEEPALIVE_MS);
  req.on("close", () => {
    clearInterval(keepalive);
    unsubscribe();
  });
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    "content-type": "application/json",
    "cache-control": "no-store",
    ...SECURITY_HEADERS,
    ...headers,
  });
  res.end(JSON.stringify(body));
}

function decodeURIComponentSafe(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

const digest = (s: string): Buffer => createHash("sha256").update(s).digest();

/** Compares digests in constant time, so the answer's timing says nothing about the token. */
function authorized(req: IncomingMessage, expected: Buffer): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
  return m?.[1] !== undefined && timingSafeEqual(digest(m[1]), expected);
}
