// `dwcp top`'s screen: a TopSnapshot as at most `height` lines of at most `width` characters,
// plain text (top.ts adds the ANSI cursor moves), so it fits an 80x24 terminal over ssh.
import { fmtBytes, fmtRate } from "./args.js";
import { fmtDuration } from "./status-table.js";
import type { TopConsumer, TopMigration, TopMover, TopReplication, TopSnapshot } from "./top-model.js";

export interface ViewOptions {
  width: number;
  height: number;
  /** Shown in the title: what top talks to. */
  source: string;
}

const BAR_CELLS = 10;

/** `[#####.....]  50%`, or blanks without a plan. */
export function progressBar(fraction: number | undefined): string {
  if (fraction === undefined) return " ".repeat(BAR_CELLS + 7);
  // Floor, so a bar is full and 100% only when everything is done.
  const cells = Math.floor(fraction * BAR_CELLS);
  const pct = `${Math.floor(fraction * 100)}%`.padStart(4);
  return `[${"#".repeat(cells)}${".".repeat(BAR_CELLS - cells)}] ${pct}`;
}

const cut = (s: string, n: number): string => (s.length <= n ? s.padEnd(n) : `${s.slice(0, Math.max(0, n - 1))}~`);
const eta = (s: number | undefined): string => (s === undefined ? "-" : fmtDuration(s));

/** Columns: [header, width, right-aligned]. The first one takes what the others leave. */
function table(
  width: number,
  cols: ReadonlyArray<readonly [string, number, boolean?]>,
  rows: ReadonlyArray<readonly string[]>,
): string[] {
  const fixed = cols.slice(1).reduce((n, c) => n + c[1] + 1, 0);
  const first = Math.max(8, width - fixed);
  const widths = cols.map((c, i) => (i === 0 ? first : c[1]));
  const line = (cells: readonly string[]): string =>
    cells
      .map((v, i) => {
        const w = widths[i] ?? 0;
        return cols[i]?.[2] ? cut(v, w).trimEnd().padStart(w) : cut(v, w);
      })
      .join(" ")
      .trimEnd()
      .slice(0, width);
  return [line(cols.map((c) => c[0])), ...rows.map(line)];
}

function migrationLines(ms: readonly TopMigration[], width: number): string[] {
  return table(
    width,
    [
      ["MIGRATION", 0],
      ["STATE", 9],
      ["PROGRESS", BAR_CELLS + 7],
      ["DONE", 9, true],
      ["RATE", 11, true],
      ["ETA", 7, true],
      ["RETRY", 5, true],
    ],
    ms.map((m) => [
      m.migrationId,
      m.state,
      progressBar(m.progress),
      fmtBytes(m.bytesDone + m.inFlightBytes),
      m.rateBytesPerSecond === undefined ? "-" : fmtRate(m.rateBytesPerSecond),
      eta(m.etaSeconds),
      m.retries === undefined ? "-" : String(m.retries),
    ]),
  );
}

function moverLines(ms: readonly TopMover[], width: number): string[] {
  return table(
    width,
    [
      ["MOVER", 0],
      ["HEALTH", 6],
      ["HEARTBEAT", 10, true],
      ["SENDING", 11, true],
      ["PID", 7, true],
      ["DATA CHANNEL", 21],
    ],
    ms.map((m) => [
      m.host,
      m.health,
      m.heartbeatAgeSeconds === undefined ? "-" : `${fmtDuration(m.heartbeatAgeSeconds)} ago`,
      fmtRate(m.sendBytesPerSecond),
      m.pid === undefined ? "-" : String(m.pid),
      m.dataAddress ?? "-",
    ]),
  );
}

function replicationLines(rs: readonly TopReplication[], width: number): string[] {
  return table(
    width,
    [
      ["REPLICATED VM", 0],
      ["SNAPSHOTS", 9, true],
      ["LAST SNAPSHOT", 20],
      ["RPO", 9, true],
    ],
    rs.map((r) => [
      r.vm,
      String(r.snapshots),
      r.lastSnapshotAt === undefined ? "-" : r.lastSnapshotAt.replace("T", " ").replace(/\.\d+Z$/, "Z"),
      r.rpoSeconds === undefined ? "-" : fmtDuration(r.rpoSeconds),
    ]),
  );
}

function consumerLines(cs: readonly TopConsumer[], width: number): string[] {
  return table(
    width,
    [
      ["CONSUMER", 0],
      ["PENDING", 9, true],
      ["ACK PENDING", 11, true],
      ["REDELIVERED", 11, true],
      ["WAITING", 7, true],
    ],
    cs.map((c) => [
      `${c.stream}/${c.durable}`,
      String(c.numPending),
      String(c.numAckPending),
      String(c.numRedelivered),
      String(c.numWaiting),
    ]),
  );
}

/** Running migrations first (oldest first), then the most recently ended. */
function ordered(ms: readonly TopMigration[]): TopMigration[] {
  const ended = (m: TopMigration): boolean => m.endedAt !== undefined;
  return [
    ...ms.filter((m) => !ended(m)),
    ...ms.filter(ended).sort((a, b) => (b.endedAt ?? "").localeCompare(a.endedAt ?? "")),
  ];
}

/** A section's lines within `max` (header included), the last saying how many rows did not fit. */
function capped(lines: string[], max: number, width: number): string[] {
  if (lines.length <= max) return lines;
  if (max <= 1) return lines.slice(0, Math.max(0, max));
  return [...lines.slice(0, max - 1), `  ... ${lines.length - max + 1} more`.slice(0, width)];
}

/** The whole screen. */
export function renderTop(s: TopSnapshot, o: ViewOptions): string[] {
  const width = Math.max(40, o.width);
  const running = s.migrations.filter((m) => m.endedAt === undefined).length;
  const title =
    `dwcp top  ${s.at.slice(11, 19)} UTC  ${running} running, ${s.migrations.length - running} ended  ` +
    `q quits  ${o.source}`;
  const head = [title.slice(0, width)];
  // Movers, consumers and replication are short; migrations get what is left.
  const rest = [
    ...(s.movers.length > 0 ? ["", ...capped(moverLines(s.movers, width), 5, width)] : []),
    ...(s.consumers.length > 0 ? ["", ...capped(consumerLines(s.consumers, width), 5, width)] : []),
    ...(s.replication.length > 0 ? ["", ...capped(replicationLines(s.replication, width), 4, width)] : []),
    ...s.problems.slice(0, 2).map((p) => `! ${p}`.slice(0, width)),
  ];
  const room = Math.max(2, o.height - head.length - rest.length - 1);
  const migrations =
    s.migrations.length === 0 ? ["no migrations"] : capped(migrationLines(ordered(s.migrations), width), room, width);
  return [...head, "", ...migrations, ...rest].slice(0, Math.max(1, o.height));
}
