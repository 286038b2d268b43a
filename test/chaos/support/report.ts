import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** One scenario's outcome, as RELIABILITY.md quotes it. */
export interface ReportEntry {
  scenario: string;
  file: string;
  seed: number;
  outcome: "passed" | "failed" | "skipped";
  /** Why it was skipped or how it failed (first line). */
  reason?: string;
  durationMs: number;
  /** Measured figures: RTOs, pauses, rates, counts. Milliseconds unless the name says otherwise. */
  figures: Record<string, number | string | boolean>;
  server: string;
  at: string;
}

export const REPORT_DIR = resolve(import.meta.dirname, "../report");
const JSON_PATH = join(REPORT_DIR, "latest.json");
const MD_PATH = join(REPORT_DIR, "latest.md");

function load(): ReportEntry[] {
  try {
    return JSON.parse(readFileSync(JSON_PATH, "utf8")) as ReportEntry[];
  } catch {
    return [];
  }
}

const fmt = (v: number | string | boolean): string =>
  typeof v === "number" ? String(Math.round(v * 100) / 100) : String(v);

/**
 * Records an entry, replacing the previous one for the same server version and scenario (spec
 * files run one after another, so read-modify-write is safe), and rewrites latest.md.
 */
export function record(entry: ReportEntry): void {
  mkdirSync(REPORT_DIR, { recursive: true });
  const entries = load().filter((e) => !(e.server === entry.server && e.scenario === entry.scenario));
  entries.push(entry);
  entries.sort(
    (a, b) =>
      a.server.localeCompare(b.server, undefined, { numeric: true }) ||
      a.file.localeCompare(b.file) ||
      a.at.localeCompare(b.at),
  );
  writeFileSync(`${JSON_PATH}.tmp`, `${JSON.stringify(entries, null, 2)}\n`);
  renameSync(`${JSON_PATH}.tmp`, JSON_PATH);
  const lines = [
    "# dwcp chaos suite: latest results",
    "",
    "Written by test/chaos (support/report.ts); one row per nats-server version and scenario, the most recent run of each.",
    "Times in ms unless a figure's name says otherwise. Replay a scenario with `DWCP_CHAOS_SEED=<seed>`.",
    "",
    "| server | scenario | seed | outcome | s | figures |",
    "|---|---|---|---|---|---|",
    ...entries.map(
      (e) =>
        `| ${e.server} | ${e.scenario} | ${e.seed} | ${e.outcome}${e.reason ? `: ${e.reason.replaceAll("|", "/")}` : ""} | ${(e.durationMs / 1000).toFixed(1)} | ${Object.entries(
          e.figures,
        )
          .map(([k, v]) => `${k}=${fmt(v)}`)
          .join(", ")} |`,
    ),
    "",
  ];
  writeFileSync(MD_PATH, lines.join("\n"));
}
