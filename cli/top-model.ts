// What `dwcp top` shows, computed from what it read (pure: no NATS, no clock of its own). The
// readers are in top.ts, the drawing in top-view.ts.
import type { BatchProgress, MigrationSummary, MoverRegistration } from "#schemas/index.js";
import type { Migration } from "#migration";
import { statusRow, type StatusRow } from "./status-table.js";

/** The span rates are measured over, in ms: long enough to smooth 250 ms progress reports. */
export const RATE_WINDOW_MS = 5_000;
/**
 * A mover whose heartbeat is older than this is shown stale: three of its 5 s heartbeats
 * missed (the registry writes one every 5 s).
 */
export const MOVER_STALE_MS = 15_000;

/** Where a rate came from: batch progress reports, the migration's events, or its whole run. */
export type RateSource = "progress" | "events" | "average";

/** One migration in `dwcp top --once --json`: its status row and what top adds. */
export interface TopMigration extends StatusRow {
  /** Logical bytes of batches still moving that their sending mover reported done so far. */
  inFlightBytes: number;
  /** bytesDone + inFlightBytes over bytesTotal, 0-1 (undefined without a plan). */
  progress: number | undefined;
  /** Logical bytes per second: over the last RATE_WINDOW_MS while it runs, else its average. */
  rateBytesPerSecond: number | undefined;
  rateSource: RateSource | undefined;
  /** Seconds left at that rate (running migrations only). */
  etaSeconds: number | undefined;
  /** Batch attempts after the first, over all batches (read for migrations that have not ended). */
  retries: number | undefined;
}

export interface TopMover {
  host: string;
  /** "ok": heartbeat within MOVER_STALE_MS; "stale": older; "gone": its entry was deleted. */
  health: "ok" | "stale" | "gone";
  heartbeatAt: string | undefined;
  heartbeatAgeSeconds: number | undefined;
  pid: number | undefined;
  dataAddress: string | undefined;
  /** Logical bytes per second it sent over the last RATE_WINDOW_MS (from its progress reports). */
  sendBytesPerSecond: number;
}

export interface TopReplication {
  vm: string;
  snapshots: number;
  /** The newest snapshot's recovery point (when its source was read), if any. */
  lastSnapshotAt: string | undefined;
  /** Recovery point objective as of now: seconds since lastSnapshotAt. */
  rpoSeconds: number | undefined;
}

export interface TopConsumer {
  stream: string;
  durable: string;
  /** Messages not yet delivered. */
  numPending: number;
  /** Delivered and not yet acknowledged. */
  numAckPending: number;
  numRedelivered: number;
  /** Pull requests waiting (a live consumer has some). */
  numWaiting: number;
}

/** One `dwcp top` snapshot, as `--once --json` prints it. */
export interface TopSnapshot {
  at: string;
  migrations: TopMigration[];
  movers: TopMover[];
  replication: TopReplication[];
  consumers: TopConsumer[];
  /** What could not be read (each a sentence), e.g. a consumer the credentials may not ask about. */
  problems: string[];
}

interface Sample {
  atMs: number;
  bytes: number;
}

/** Samples within the window ending at `nowMs` (the newest one older than it kept as the base). */
function trim(samples: Sample[], nowMs: number): void {
  while (samples.length > 1 && (samples[1]?.atMs ?? nowMs) <= nowMs - RATE_WINDOW_MS) samples.shift();
}

/**
 * Rates from what top has seen so far: each progress report's increase over the previous report
 * of the same batch attempt (per migration and per sending host), and each migration's done bytes
 * between refreshes. The first report of a batch attempt only sets its base.
 */
export class RateTracker {
  private readonly lastReport = new Map<string, BatchProgress>();
  /** Latest report per migration and batch: its attempt and bytes, for in-flight bytes. */
  private readonly latest = new Map<string, Map<number, { attempt: number; bytes: number }>>();
  private readonly progressBytes = new Map<string, Sample[]>();
  private readonly hostBytes = new Map<string, Sample[]>();
  private readonly doneBytes = new Map<string, Sample[]>();

  constructor(private readonly startedMs: number) {}

  /** A verified progress report, received at `nowMs`. */
  onProgress(p: BatchProgress, nowMs: number): void {
    const key = `${p.migrationId}/${p.batch}/${p.attempt}`;
    const before = this.lastReport.get(key);
    this.lastReport.set(key, p);
    const batches = this.latest.get(p.migrationId) ?? new Map<number, { attempt: number; bytes: number }>();
    batches.set(p.batch, { attempt: p.attempt, bytes: p.bytes });
    this.latest.set(p.migrationId, batches);
    if (before === undefined || p.bytes <= before.bytes) return;
    const delta = p.bytes - before.bytes;
    push(this.progressBytes, p.migrationId, nowMs, delta);
    push(this.hostBytes, p.host, nowMs, delta);
  }

  /** Logical bytes reported for the batches of `m` that are still moving (at their current attempt). */
  inFlight(m: Migration): number {
    const batches = this.latest.get(m.id);
    if (batches === undefined) return 0;
    let n = 0;
    for (const [i, r] of batches) {
      const b = m.batches[i];
      if (b?.status === "pending" && b.attempt === r.attempt) n += r.bytes;
    }
    return n;
  }

  /** Records a migration's done bytes (events plus in-flight) at a refresh. */
  onDone(id: string, bytes: number, nowMs: number): void {
    const s = this.doneBytes.get(id) ?? [];
    s.push({ atMs: nowMs, bytes });
    trim(s, nowMs);
    this.doneBytes.set(id, s);
  }

  /** A migration's rate over the window, from progress reports, else from its done bytes. */
  migrationRate(id: string, nowMs: number): { rate: number; source: RateSource } | undefined {
    const fromProgress = this.windowRate(this.progressBytes.get(id), nowMs);
    if (fromProgress !== undefined && fromProgress > 0) return { rate: fromProgress, source: "progress" };
    const s = this.doneBytes.get(id);
    const first = s?.[0];
    const last = s?.at(-1);
    if (first === undefined || last === undefined || last.atMs - first.atMs < 500) return undefined;
    return { rate: Math.max(0, (last.bytes - first.bytes) / ((last.atMs - first.atMs) / 1000)), source: "events" };
  }

  /** Bytes per second a host sent over the window. */
  hostRate(host: string, nowMs: number): number {
    return this.windowRate(this.hostBytes.get(host), nowMs) ?? 0;
  }

  /** Forgets what belongs to migrations no longer running. */
  keepOnly(running: ReadonlySet<string>): void {
    for (const map of [this.latest, this.progressBytes, this.doneBytes]) {
      for (const id of map.keys()) if (!running.has(id)) map.delete(id);
    }
    for (const key of this.lastReport.keys())
      if (!running.has(key.slice(0, key.indexOf("/")))) this.lastReport.delete(key);
  }

  private windowRate(samples: Sample[] | undefined, nowMs: number): number | undefined {
    if (samples === undefined) return undefined;
    trim(samples, nowMs);
    const since = nowMs - RATE_WINDOW_MS;
    const sum = samples.filter((x) => x.atMs > since).reduce((a, x) => a + x.bytes, 0);
    // Over the window, or over what top has seen of it if it started less than a window ago.
    const spanMs = Math.max(250, Math.min(RATE_WINDOW_MS, nowMs - this.startedMs));
    return sum / (spanMs / 1000);
  }
}

function push(map: Map<string, Sample[]>, key: string, atMs: number, bytes: number): void {
  const s = map.get(key) ?? [];
  s.push({ atMs, bytes });
  trim(s, atMs);
  map.set(key, s);
}

/** Batch attempts after the first, over all of a migration's batches. */
export const retriesOf = (m: Migration): number => m.batches.reduce((n, b) => n + b.attempt, 0);

/**
 * One migration's row: its status row (the same as `dwcp status --json`) and, when it is folded
 * (`folded`, for migrations that have not ended), its in-flight bytes, rate, ETA and retries.
 */
export function topMigration(
  summary: MigrationSummary,
  folded: Migration | undefined,
  rates: RateTracker,
  now: Date,
): TopMigration {
  const row = statusRow(summary, now);
  const inFlight = folded === undefined ? 0 : rates.inFlight(folded);
  const done = row.bytesDone + inFlight;
  const running = summary.state === "running" || summary.state === "planned" || summary.state === "requested";
  let rate: { rate: number; source: RateSource } | undefined;
  if (running) {
    rates.onDone(summary.migrationId, done, now.getTime());
    rate = rates.migrationRate(summary.migrationId, now.getTime());
  }
  if (rate === undefined && row.bytesPerSecond !== undefined && row.bytesDone > 0)
    rate = { rate: row.bytesPerSecond, source: "average" };
  const total = row.bytesTotal;
  const left = total === undefined ? undefined : Math.max(0, total - done);
  return {
    ...row,
    inFlightBytes: inFlight,
    progress: total === undefined || total === 0 ? undefined : Math.min(1, done / total),
    rateBytesPerSecond: rate?.rate,
    rateSource: rate?.source,
    etaSeconds: running && left !== undefined && rate !== undefined && rate.rate > 0 ? left / rate.rate : undefined,
    retries: folded === undefined ? undefined : retriesOf(folded),
  };
}

/** A registry entry (or its deletion, `undefined`) as a mover row. */
export function topMover(host: string, reg: MoverRegistration | undefined, rates: RateTracker, now: Date): TopMover {
  const age = reg === undefined ? undefined : Math.max(0, (now.getTime() - Date.parse(reg.heartbeatAt)) / 1000);
  return {
    host,
    health: age === undefined ? "gone" : age * 1000 > MOVER_STALE_MS ? "stale" : "ok",
    heartbeatAt: reg?.heartbeatAt,
    heartbeatAgeSeconds: age,
    pid: reg?.pid,
    dataAddress: reg?.dataAddress,
    sendBytesPerSecond: rates.hostRate(host, now.getTime()),
  };
}

/** A VM's replication row from its newest snapshot's recovery point. */
export function topReplication(
  vm: string,
  snapshots: number,
  lastTakenAt: string | undefined,
  now: Date,
): TopReplication {
  return {
    vm,
    snapshots,
    lastSnapshotAt: lastTakenAt,
    rpoSeconds: lastTakenAt === undefined ? undefined : Math.max(0, (now.getTime() - Date.parse(lastTakenAt)) / 1000),
  };
}
