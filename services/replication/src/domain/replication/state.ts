import type { SnapshotCommitted } from "#schemas/replication.js";

/** A committed snapshot as the log describes it. */
export type Snapshot = Omit<SnapshotCommitted, "type" | "version" | "vm" | "at"> & { committedAt: string };

export interface Replication {
  vm: string;
  /** Snapshots that are committed and not pruned, oldest first. */
  snapshots: Snapshot[];
  /** Ids pruned by retention (their chunks may be gone). */
  pruned: string[];
  lastCommittedAt?: string;
  /** Events folded so far. */
  eventCount: number;
}

export const initialReplication = (vm: string): Replication => ({ vm, snapshots: [], pruned: [], eventCount: 0 });

/** The newest snapshot whose recovery point is at or before `time` (ISO), if any. */
export function snapshotAt(r: Replication, time: string): Snapshot | undefined {
  const t = Date.parse(time);
  let best: Snapshot | undefined;
  for (const s of r.snapshots)
    if (Date.parse(s.takenAt) <= t && (!best || Date.parse(s.takenAt) >= Date.parse(best.takenAt))) best = s;
  return best;
}

export const latestSnapshot = (r: Replication): Snapshot | undefined => r.snapshots[r.snapshots.length - 1];
