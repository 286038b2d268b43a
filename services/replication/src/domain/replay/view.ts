import type { MigrationEvent } from "../../../../../schemas/index.js";
import type { ReplicationEvent } from "../../../../../schemas/replication.js";
import { evolve as evolveMigration } from "../../../../coordinator/src/domain/migration/evolve.js";
import { initialMigration, type Migration } from "../../../../coordinator/src/domain/migration/state.js";
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
  | { kind: "skipped"; seq: number; timeMs: number };

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
}

export const beyond = (b: ReplayBound, seq: number, timeMs: number): boolean =>
  (b.untilSeq !== undefined && seq > b.untilSeq) || (b.untilTimeMs !== undefined && timeMs > b.untilTimeMs);

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

  add(r: ReplayRecord): void {
    this.lastSeq = r.seq;
    this.lastTimeMs = r.timeMs;
    switch (r.kind) {
      case "migration":
        this.events++;
        this.migrations.set(r.id, evolveMigration(this.migrations.get(r.id) ?? initialMigration(r.id), r.event));
        return;
      case "replication":
        this.events++;
        this.replications.set(r.vm, evolveReplication(this.replications.get(r.vm) ?? initialReplication(r.vm), r.event));
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

  view(bound: ReplayBound, vm?: string): ReplayView {
    const migrations = [...this.migrations.values()]
      .filter((m) => vm === undefined || m.request?.vm === vm)
      .sort((a, b) => (a.requestedAt ?? "").localeCompare(b.requestedAt ?? "") || a.id.localeCompare(b.id));
    const replications = [...this.replications.values()]
      .filter((r) => vm === undefined || r.vm === vm)
      .sort((a, b) => a.vm.localeCompare(b.vm));
    return {
      ...(bound.untilSeq !== undefined ? { untilSeq: bound.untilSeq } : {}),
      ...(bound.untilTimeMs !== undefined ? { untilTime: new Date(bound.untilTimeMs).toISOString() } : {}),
      ...(vm !== undefined ? { vm } : {}),
      lastSeq: this.lastSeq,
      ...(this.lastTimeMs !== undefined ? { lastTime: new Date(this.lastTimeMs).toISOString() } : {}),
      events: this.events,
      skipped: this.skipped,
      migrations,
      replications,
    };
  }
}

/** A short human summary: one line per migration and per replication. */
export function formatReplay(v: ReplayView): string {
  const bound = [v.untilSeq !== undefined ? `seq <= ${v.untilSeq}` : "", v.untilTime ? `time <= ${v.untilTime}` : ""].filter(Boolean).join(", ");
  const lines = [`replay ${bound || "(whole log)"}${v.vm ? ` vm ${v.vm}` : ""}: ${v.events} events up to seq ${v.lastSeq}${v.lastTime ? ` (${v.lastTime})` : ""}`];
  if (v.migrations.length === 0 && v.replications.length === 0) lines.push("  (nothing recorded yet)");
  for (const m of v.migrations) {
    const done = m.batches.filter((b) => b.status === "done").length;
    const batches = m.plan ? ` batches ${done}/${m.batches.length}` : "";
    lines.push(`  migration ${m.id} vm=${m.request?.vm ?? "?"} ${m.status}${batches}${m.reason ? ` reason=${m.reason}` : ""}`);
  }
  for (const r of v.replications) {
    const last = r.snapshots[r.snapshots.length - 1];
    lines.push(`  replication ${r.vm}: ${r.snapshots.length} snapshot(s)${last ? `, latest ${last.snapshotId} taken ${last.takenAt}` : ""}`);
  }
  return lines.join("\n");
}
