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

const ROOT = resolve(import.meta.dirname, "../../..");
/**
 * Where a run writes latest.{json,md}: DWCP_CHAOS_REPORT_DIR (relative to the repository root)
 * or the git-ignored tmp/chaos-report. Generated, never tracked: CI prints it at the end of a run.
 */
export const REPORT_DIR = resolve(ROOT, process.env["DWCP_CHAOS_REPORT_DIR"] || "tmp/chaos-report");
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
    "Written by test/chaos (support/report.ts); one row per nats-server version and scenario,",
    "the most recent run of each.",
    "Times in ms unless a figure's name says otherwise. Replay a scenario with `DWCP_CHAOS_SEED=<seed>`.",
    "",
    "| server | scenario | seed | outcome | s | figures |",
    "|---|---|---|---|---|---|",
    ...entries.map((e) => {
      const outcome = `${e.outcome}${e.reason ? `: ${e.reason.replaceAll("|", "/")}` : ""}`;
      const figures = Object.entries(e.figures)
        .map(([k, v]) => `${k}=${fmt(v)}`)
        .join(", ");
      const seconds = (e.durationMs / 1000).toFixed(1);
      return `| ${e.server} | ${e.scenario} | ${e.seed} | ${outcome} | ${seconds} | ${figures} |`;
    }),
    "",
  ];
  writeFileSync(MD_PATH, lines.join("\n"));
}
