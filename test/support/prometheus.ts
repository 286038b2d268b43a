import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stopChild } from "#common/child-process.js";
import { freePort } from "#common/nats-server.js";

/** Debian's prometheus package puts the server here; tests run it as a plain process. */
export const PROMETHEUS_BIN = process.env["DWCP_PROMETHEUS"] ?? "/usr/bin/prometheus";

export function prometheusAvailable(): boolean {
  try {
    accessSync(PROMETHEUS_BIN, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The shipped alert rules, with every `for:` and range window cut to seconds for a test. */
export function shortenedRules(shipped: string, o: { forSeconds: number; rangeSeconds: number }): string {
  return shipped.replace(/for: \d+[smh]/g, `for: ${o.forSeconds}s`).replace(/\[\d+[smh]\]/g, `[${o.rangeSeconds}s]`);
}

export interface Prometheus {
  url: string;
  /** An instant query's vector: each series' labels and value. */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: number }>>;
  /** A range query's points (Unix seconds, value) for its first series. */
  queryRange(expr: string, startS: number, endS: number, stepS: number): Promise<Array<[number, number]>>;
  /** The alerts API: each active alert's labels and state (pending or firing). */
  alerts(): Promise<Array<{ labels: Record<string, string>; state: string }>>;
  stop(): Promise<void>;
}

/**
 * Starts a real Prometheus (own config, TSDB under `dir`, a free loopback port) scraping every
 * second the file_sd target files `jobs` names (job -> file), evaluating `rules` every second.
 */
export async function startPrometheus(o: {
  dir: string;
  jobs: Record<string, string>;
  rules?: string;
}): Promise<Prometheus> {
  mkdirSync(o.dir, { recursive: true });
  const port = await freePort();
  const rulesFile = join(o.dir, "rules.yml");
  if (o.rules !== undefined) writeFileSync(rulesFile, o.rules);
  const config = [
    "global:",
    "  scrape_interval: 200ms",
    "  scrape_timeout: 180ms",
    "  evaluation_interval: 1s",
    ...(o.rules !== undefined ? ["rule_files:", `  - ${rulesFile}`] : []),
    "scrape_configs:",
    ...Object.entries(o.jobs).flatMap(([job, file]) => [
      `  - job_name: ${job}`,
      "    file_sd_configs:",
      `      - files: [${file}]`,
      "        refresh_interval: 1s",
    ]),
  ].join("\n");
  const configFile = join(o.dir, "prometheus.yml");
  writeFileSync(configFile, `${config}\n`);
  const logFile = join(o.dir, "prometheus.log");
  const fd = openSync(logFile, "a");
  const child: ChildProcess = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(o.dir, "tsdb")}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ["ignore", fd, fd] },
  );
  closeSync(fd);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`prometheus exited (${child.exitCode}):\n${readFileSync(logFile, "utf8").slice(-2000)}`);
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) throw new Error(`prometheus not ready in 60 s:\n${readFileSync(logFile, "utf8")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const api = async <T>(path: string): Promise<T> => {
    const r = await fetch(`${url}${path}`);
    const body = (await r.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`prometheus ${path}: ${body.error ?? r.status}`);
    return body.data;
  };
  return {
    url,
    async query(expr) {
      const data = await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>(
        `/api/v1/query?query=${encodeURIComponent(expr)}`,
      );
      return data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    async queryRange(expr, startS, endS, stepS) {
      const q = `query=${encodeURIComponent(expr)}&start=${startS}&end=${endS}&step=${stepS}`;
      const data = await api<{ result: Array<{ values: Array<[number, string]> }> }>(`/api/v1/query_range?${q}`);
      return (data.result[0]?.values ?? []).map(([t, v]) => [t, Number(v)]);
    },
    async alerts() {
      return (await api<{ alerts: Array<{ labels: Record<string, string>; state: string }> }>("/api/v1/alerts")).alerts;
    },
    stop: () => stopChild(child, exited, "SIGTERM", 10_000),
  };
}

/** Polls `probe` until it returns a value (not undefined) or `timeoutMs` passes; then fails with `what`. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
