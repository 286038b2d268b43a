import type { MigrationSummary } from "#schemas/index.js";
import { fmtBytes, fmtRate } from "./args.js";

/** One migration as `dwcp status --json` gives it. */
export interface StatusRow {
  migrationId: string;
  state: MigrationSummary["state"];
  vm: string | undefined;
  /** When it was requested (ISO time), and when it ended if it did. */
  startedAt: string | undefined;
  endedAt: string | undefined;
  /** Seconds from request to end (or to `now` while it runs). */
  durationSeconds: number | undefined;
  /** Logical bytes done: data (before compression) plus skipped zero (see README, "Numbers"). */
  bytesDone: number;
  bytesTotal: number | undefined;
  /** Bytes sent on the data channel and zero bytes skipped, of bytesDone. */
  wireBytes: number;
  zeroBytes: number;
  /** Of bytesDone, bytes an incremental migration's destination took from its earlier copy. */
  baseReusedBytes?: number;
  /** Logical bytes per second over the duration. */
  bytesPerSecond: number | undefined;
  batchesDone: number;
  batches: number | undefined;
  reason?: string;
  message?: string;
  ignored?: MigrationSummary["ignored"];
}

/** A migration's summary (summaryOf, or the coordinator's) as a status row, its duration up to `now` while it runs. */
export function statusRow(m: MigrationSummary, now: Date): StatusRow {
  const started = m.requestedAt === undefined ? undefined : Date.parse(m.requestedAt);
  const ended = m.endedAt === undefined ? now.getTime() : Date.parse(m.endedAt);
  const seconds = started === undefined ? undefined : Math.max(0, (ended - started) / 1000);
  return {
    migrationId: m.migrationId,
    state: m.state,
    vm: m.vm,
    startedAt: m.requestedAt,
    endedAt: m.endedAt,
    durationSeconds: seconds,
    bytesDone: m.bytes,
    bytesTotal: m.totalBytes,
    wireBytes: m.wireBytes,
    zeroBytes: m.zeroBytes,
    ...(m.baseReusedBytes === undefined ? {} : { baseReusedBytes: m.baseReusedBytes }),
    bytesPerSecond: seconds === undefined || seconds === 0 ? undefined : m.bytes / seconds,
    batchesDone: m.batchesDone,
    batches: m.batches,
    ...(m.reason ? { reason: m.reason, message: m.message } : {}),
    ...(m.ignored ? { ignored: m.ignored } : {}),
  };
}

const HEADER = ["MIGRATION", "STATE", "VM", "STARTED", "DURATION", "BYTES", "RATE", "BATCHES"] as const;

/** `dwcp status` for people: a header and one aligned line per migration ("no migrations" when none). */
export function statusTable(rows: readonly StatusRow[]): string {
  if (rows.length === 0) return "no migrations";
  const cells = rows.map((r) => [
    r.migrationId,
    r.state,
    r.vm ?? "-",
    r.startedAt === undefined ? "-" : r.startedAt.replace("T", " ").replace(/\.\d+Z$/, "Z"),
    r.durationSeconds === undefined ? "-" : fmtDuration(r.durationSeconds),
    `${fmtBytes(r.bytesDone)}/${fmtBytes(r.bytesTotal ?? 0)}`,
    r.bytesPerSecond === undefined ? "-" : fmtRate(r.bytesPerSecond),
    `${r.batchesDone}/${r.batches ?? 0}`,
  ]);
  const widths = HEADER.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? "").length)));
  const line = (c: readonly string[]): string =>
    c
      .map((v, i) => v.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  const notes = rows.flatMap((r) => [
    ...(r.reason ? [`  ${r.migrationId}: ${r.reason}: ${r.message ?? ""}`] : []),
    ...(r.ignored
      ? [`  ${r.migrationId}: ignored ${r.ignored.count} event(s), last ${r.ignored.recent.at(-1)?.reason ?? ""}`]
      : []),
  ]);
  return [line(HEADER), ...cells.map(line), ...notes].join("\n");
}

/** 75.2 s, 3m 04s, 2h 05m. */
export function fmtDuration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m ${String(Math.floor(seconds % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}
