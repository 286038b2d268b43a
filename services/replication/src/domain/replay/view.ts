import type { MigrationEvent } from "#schemas/index.js";
import type { ReplicationEvent } from "#schemas/replication.js";
import { evolveInvalid, evolveTrusted, initialMigration, type Migration, type Producer } from "#migration";
import { evolve as evolveReplication } from "../replication/evolve.js";
import { replicationRefusal } from "../replication/producers.js";
import { initialReplication, type Replication } from "../replication/state.js";

/** Where a replay stops: the last event at or before both bounds is included. */
export interface ReplayBound {
  /** Stream sequence (the original one for a restored log). */
  untilSeq?: number;
  /** Epoch milliseconds. */
  untilTimeMs?: number;
}

/**
 * One stored event, decoded at the edge. `seq` and `timeMs` are the original stream's;
 * `provenance` is its producer as the reader verified the signature (undefined: not checked, so
 * never folded), the same rules the services fold by.
 */
export type ReplayRecord =
  | { kind: "migration"; id: string; seq: number; timeMs: number; event: MigrationEvent; provenance?: Producer }
  | { kind: "replication"; vm: string; seq: number; timeMs: number; event: ReplicationEvent; provenance?: Producer }
  /**
   * A message on a migration's subject that is not a valid event: from a trusted producer it sets
   * the migration aside, from anyone else it is ignored input (evolveInvalid).
   */
  | { kind: "invalid"; id: string; seq: number; timeMs: number; problem: string; provenance?: Producer }
  | { kind: "skipped"; seq: number; timeMs: number };

/** A migration the replay could not fold past an event: where and why. */
export interface SetAsideRecord {
  migrationId: string;
  seq: number;
  reason: string;
}

/** An event the replay did not fold: its producer may not make it (or it was not signed). */
export interface IgnoredRecord {
  aggregate: "migration" | "replication";
  /** The migration id or VM name. */
  id: string;
  seq: number;
  type: string;
  reason: string;
}

/** How many ignored events a view lists (the count is exact). */
export const IGNORED_LISTED = 20;

/** The coordinator's view as of a point in the log. */
export interface ReplayView {
  untilSeq?: number;
  untilTime?: string;
  vm?: string;
  /** Sequence and time of the last event folded (0 / undefined when none). */
  lastSeq: number;
  lastTime?: string;
  /** Events folded, and stored messages that were not dwcp events (or invalid). */
  events: number;
  skipped: number;
  migrations: Migration[];
  replications: Replication[];
  /** Migrations set aside by a bad event (their state is as folded before it), in log order. */
  setAside: SetAsideRecord[];
  /** Events not folded because their producer may not make them: the count, and the last ones. */
  ignored: { count: number; recent: IgnoredRecord[] };
}

export const beyond = (b: ReplayBound, seq: number, timeMs: number): boolean =>
  (b.untilSeq !== undefined && seq > b.untilSeq) || (b.untilTimeMs !== undefined && timeMs > b.untilTimeMs);

/** Options of a fold. */
export interface FoldOptions {
  /**
   * Keep each transferred batch's chunk list (offset, length, CRC32C per chunk). Off by default:
   * a replay shows states, and on a long log these lists are most of its memory (16 objects per
   * batch event, 15M for a million events).
   */
  chunks?: boolean;
}

/** What a folder holds, as plain data: folders of disjoint aggregates combine into one view. */
export interface FoldParts {
  migrations: Migration[];
  replications: Replication[];
  lastSeq: number;
  lastTimeMs: number | undefined;
  events: number;
  skipped: number;
  setAside: SetAsideRecord[];
  ignored: { count: number; recent: IgnoredRecord[] };
}

/**
 * Accumulates records in log order. Pure (no I/O); mutable inside for speed, since a replay folds
 * up to millions of events and copying maps per event would dominate.
 */
export class ReplayFolder {
  private readonly migrations = new Map<string, Migration>();
  private readonly replications = new Map<string, Replication>();
  private lastSeq = 0;
  private lastTimeMs: number | undefined;
  private events = 0;
  private skipped = 0;
  private readonly setAside: SetAsideRecord[] = [];
  private ignoredCount = 0;
  private readonly ignored: IgnoredRecord[] = [];

  constructor(private readonly opts: FoldOptions = {}) {}

  add(r: ReplayRecord): void {
    this.pass(r.seq, r.timeMs);
    switch (r.kind) {
      case "migration": {
        this.events++;
        const before = this.migrations.get(r.id) ?? initialMigration(r.id);
        const m = evolveTrusted(before, r);
        if (m.ignored !== before.ignored) {
          const last = m.ignored?.recent.at(-1);
          this.ignore({ aggregate: "migration", id: r.id, seq: r.seq, type: r.event.type, reason: last?.reason ?? "" });
        }
        if (r.event.type === "ChunkBatchTransferred" && !this.opts.chunks) dropChunks(m, r.event.batch);
        this.setMigration(r.id, r.seq, before, m);
        return;
      }
      case "invalid": {
        this.skipped++;
        const before = this.migrations.get(r.id) ?? initialMigration(r.id);
        const m = evolveInvalid(before, r);
        if (m.ignored !== before.ignored) {
          const last = m.ignored?.recent.at(-1);
          this.ignore({ aggregate: "migration", id: r.id, seq: r.seq, type: "invalid", reason: last?.reason ?? "" });
        }
        this.setMigration(r.id, r.seq, before, m);
        return;
      }
      case "replication": {
        this.events++;
        const reason = replicationRefusal(r.event, r.provenance);
        if (reason !== undefined) {
          this.ignore({ aggregate: "replication", id: r.vm, seq: r.seq, type: r.event.type, reason });
          return;
        }
        this.replications.set(
          r.vm,
          evolveReplication(this.replications.get(r.vm) ?? initialReplication(r.vm), r.event),
        );
        return;
      }
      case "skipped":
        this.skipped++;
        return;
      default: {
        const never: never = r;
        return never;
      }
    }
  }

  private ignore(r: IgnoredRecord): void {
    this.ignoredCount++;
    this.ignored.push(r);
    if (this.ignored.length > IGNORED_LISTED) this.ignored.shift();
  }

  private setMigration(id: string, seq: number, before: Migration, after: Migration): void {
    this.migrations.set(id, after);
    if (after.status === "set-aside" && before.status !== "set-aside") {
      this.setAside.push({ migrationId: id, seq, reason: after.message ?? "set aside" });
    }
  }

  /** A record another folder folds (a partitioned replay): only the position in the log moves. */
  pass(seq: number, timeMs: number): void {
    this.lastSeq = seq;
    this.lastTimeMs = timeMs;
  }

  parts(): FoldParts {
    return {
      migrations: [...this.migrations.values()],
      replications: [...this.replications.values()],
      lastSeq: this.lastSeq,
      lastTimeMs: this.lastTimeMs,
      events: this.events,
      skipped: this.skipped,
      setAside: [...this.setAside],
      ignored: { count: this.ignoredCount, recent: [...this.ignored] },
    };
  }

  view(bound: ReplayBound, vm?: string): ReplayView {
    return combineParts([this.parts()], bound, vm);
  }
}

/**
 * Forgets the chunk list evolve just stored in batch `index`. The batch array is the one evolve
 * built for this state (or, for a no-op, one already without a list), owned by the folder alone.
 */
function dropChunks(m: Migration, index: number): void {
  const b = m.batches[index];
  if (b?.chunks === undefined) return;
  const { chunks: _dropped, ...rest } = b;
  m.batches[index] = rest;
}

/**
 * One view from the parts of folders that each folded a disjoint set of aggregates of the same
 * log up to the same bound (every folder saw every record's position, so any one's is the view's).
 */
export function combineParts(parts: FoldParts[], bound: ReplayBound, vm?: string): ReplayView {
  const last = parts.reduce(
    (a, p) => (p.lastSeq > a.lastSeq ? p : a),
    parts[0] ?? { lastSeq: 0, lastTimeMs: undefined },
  );
  const migrations = parts
    .flatMap((p) => p.migrations)
    .filter((m) => vm === undefined || m.request?.vm === vm)
    .sort((a, b) => (a.requestedAt ?? "").localeCompare(b.requestedAt ?? "") || a.id.localeCompare(b.id));
  const shown = new Set(migrations.map((m) => m.id));
  const replications = parts
    .flatMap((p) => p.replications)
    .filter((r) => vm === undefined || r.vm === vm)
    .sort((a, b) => a.vm.localeCompare(b.vm));
  return {
    ...(bound.untilSeq !== undefined ? { untilSeq: bound.untilSeq } : {}),
    ...(bound.untilTimeMs !== undefined ? { untilTime: new Date(bound.untilTimeMs).toISOString() } : {}),
    ...(vm !== undefined ? { vm } : {}),
    lastSeq: last.lastSeq,
    ...(last.lastTimeMs !== undefined ? { lastTime: new Date(last.lastTimeMs).toISOString() } : {}),
    events: parts.reduce((n, p) => n + p.events, 0),
    skipped: parts.reduce((n, p) => n + p.skipped, 0),
    migrations,
    replications,
    setAside: parts
      .flatMap((p) => p.setAside)
      .filter((s) => shown.has(s.migrationId))
      .sort((a, b) => a.seq - b.seq),
    ignored: combineIgnored(parts, vm, shown),
  };
}

/** The parts' ignored events of the shown aggregates: an exact count when nothing is filtered out. */
function combineIgnored(parts: FoldParts[], vm: string | undefined, shown: Set<string>): ReplayView["ignored"] {
  const mine = (r: IgnoredRecord): boolean =>
    vm === undefined || (r.aggregate === "migration" ? shown.has(r.id) : r.id === vm);
  const all = parts.flatMap((p) => p.ignored.recent).filter(mine);
  // With a VM filter only the listed events can be told apart: the count is theirs.
  const count = vm === undefined ? parts.reduce((n, p) => n + p.ignored.count, 0) : all.length;
  return { count, recent: all.sort((a, b) => a.seq - b.seq).slice(-IGNORED_LISTED) };
}

/** A short human summary: one line per migration and per replication. */
export function formatReplay(v: ReplayView): string {
  const bound = [v.untilSeq !== undefined ? `seq <= ${v.untilSeq}` : "", v.untilTime ? `time <= ${v.untilTime}` : ""]
    .filter(Boolean)
    .join(", ");
  const lines = [
    `replay ${bound || "(whole log)"}${v.vm ? ` vm ${v.vm}` : ""}: ` +
      `${v.events} events up to seq ${v.lastSeq}${v.lastTime ? ` (${v.lastTime})` : ""}`,
  ];
  if (v.migrations.length === 0 && v.replications.length === 0) lines.push("  (nothing recorded yet)");
  for (const m of v.migrations) {
    const done = m.batches.filter((b) => b.status === "done").length;
    const batches = m.plan ? ` batches ${done}/${m.batches.length}` : "";
    lines.push(
      `  migration ${m.id} vm=${m.request?.vm ?? "?"} ${m.status}${batches}${m.reason ? ` reason=${m.reason}` : ""}`,
    );
  }
  for (const s of v.setAside) lines.push(`  set aside: migration ${s.migrationId} at seq ${s.seq}: ${s.reason}`);
  if (v.ignored.count > 0) {
    lines.push(
      `  ignored: ${v.ignored.count} event(s) whose producer may not make them` +
        (v.ignored.count > v.ignored.recent.length ? `, the last ${v.ignored.recent.length}:` : ":"),
    );
    for (const i of v.ignored.recent) lines.push(`    ${i.aggregate} ${i.id} seq ${i.seq} ${i.type}: ${i.reason}`);
  }
  for (const r of v.replications) {
    const last = r.snapshots[r.snapshots.length - 1];
    lines.push(
      `  replication ${r.vm}: ${r.snapshots.length} snapshot(s)` +
        (last ? `, latest ${last.snapshotId} taken ${last.takenAt}` : ""),
    );
  }
  return lines.join("\n");
}
