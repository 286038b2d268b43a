import type { MigrationEvent } from "#schemas/index.js";
import type { ReplicationEvent } from "#schemas/replication.js";
import { evolve as evolveMigration, initialMigration, invalidEventMessage, setAside, type Migration } from "#migration";
import { evolve as evolveReplication } from "../replication/evolve.js";
import { initialReplication, type Replication } from "../replication/state.js";

/** Where a replay stops: the last event at or before both bounds is included. */
export interface ReplayBound {
  /** Stream sequence (the original one for a restored log). */
  untilSeq?: number;
  /** Epoch milliseconds. */
  untilTimeMs?: number;
}

/** One stored event, decoded at the edge. `seq` and `timeMs` are the original stream's. */
export type ReplayRecord =
  | { kind: "migration"; id: string; seq: number; timeMs: number; event: MigrationEvent }
  | { kind: "replication"; vm: string; seq: number; timeMs: number; event: ReplicationEvent }
  /** A message on a migration's subject that is not a valid event: it sets the migration aside. */
  | { kind: "invalid"; id: string; seq: number; timeMs: number; problem: string }
  | { kind: "skipped"; seq: number; timeMs: number };

/** A migration the replay could not fold past an event: where and why. */
export interface SetAsideRecord {
  migrationId: string;
  seq: number;
  reason: string;
}

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

  constructor(private readonly opts: FoldOptions = {}) {}

  add(r: ReplayRecord): void {
    this.pass(r.seq, r.timeMs);
    switch (r.kind) {
      case "migration": {
        this.events++;
        const before = this.migrations.get(r.id) ?? initialMigration(r.id);
        const m = evolveMigration(before, r.event);
        if (r.event.type === "ChunkBatchTransferred" && !this.opts.chunks) dropChunks(m, r.event.batch);
        this.setMigration(r.id, r.seq, before, m);
        return;
      }
      case "invalid": {
        this.skipped++;
        const before = this.migrations.get(r.id) ?? initialMigration(r.id);
        this.setMigration(r.id, r.seq, before, setAside(before, invalidEventMessage(r.problem)));
        return;
      }
      case "replication":
        this.events++;
        this.replications.set(
          r.vm,
          evolveReplication(this.replications.get(r.vm) ?? initialReplication(r.vm), r.event),
        );
        return;
      case "skipped":
        this.skipped++;
        return;
      default: {
        const never: never = r;
        return never;
      }
    }
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
  };
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
  for (const r of v.replications) {
    const last = r.snapshots[r.snapshots.length - 1];
    lines.push(
      `  replication ${r.vm}: ${r.snapshots.length} snapshot(s)` +
        (last ? `, latest ${last.snapshotId} taken ${last.takenAt}` : ""),
    );
  }
  return lines.join("\n");
}
