import type { ReplicationEvent, SnapshotCommitted, SnapshotsPruned } from "#schemas/replication.js";
import { SnapshotParentMovedError } from "./errors.js";
import { latestSnapshot, type Replication } from "./state.js";

/** Time arrives from outside: decide never reads a clock. */
export interface DecideContext {
  now: Date;
}

/** What a committed snapshot records, apart from the envelope (type, version, vm, time). */
export type SnapshotRecord = Omit<SnapshotCommitted, "type" | "version" | "vm" | "at">;

/** What the replication log is asked to record. */
export type ReplicationCommand =
  /** The destination committed a manifest: record it as the VM's latest snapshot. */
  | { type: "CommitSnapshot"; snapshot: SnapshotRecord }
  /** Retention dropped these snapshots and deleted `chunksDeleted` chunks no kept one needs. */
  | { type: "PruneSnapshots"; snapshotIds: string[]; chunksDeleted: number };

/** The SnapshotCommitted event of `snapshot`, committed at `at`. */
export const snapshotCommitted = (vm: string, at: Date, snapshot: SnapshotRecord): SnapshotCommitted => ({
  type: "SnapshotCommitted",
  version: snapshot.vmDefinition === undefined ? 1 : 2,
  vm,
  at: at.toISOString(),
  ...snapshot,
});

/**
 * Pure: the events `command` adds to a VM's replication log. A snapshot already recorded (or
 * pruned) and a prune of snapshots no longer present yield no events; a snapshot whose parent is
 * no longer the latest is refused, so the log's chain of parents has no forks.
 */
export function decide(state: Replication, command: ReplicationCommand, ctx: DecideContext): ReplicationEvent[] {
  switch (command.type) {
    case "CommitSnapshot": {
      const { snapshotId, parentId } = command.snapshot;
      if (state.snapshots.some((s) => s.snapshotId === snapshotId) || state.pruned.includes(snapshotId)) return [];
      const latest = latestSnapshot(state)?.snapshotId;
      if (latest !== parentId) throw new SnapshotParentMovedError(state.vm, snapshotId, parentId, latest);
      return [snapshotCommitted(state.vm, ctx.now, command.snapshot)];
    }
    case "PruneSnapshots": {
      const present = new Set(state.snapshots.map((s) => s.snapshotId));
      const snapshotIds = command.snapshotIds.filter((id) => present.has(id));
      if (snapshotIds.length === 0) return [];
      const pruned: SnapshotsPruned = {
        type: "SnapshotsPruned",
        version: 1,
        vm: state.vm,
        at: ctx.now.toISOString(),
        snapshotIds,
        chunksDeleted: command.chunksDeleted,
      };
      return [pruned];
    }
    default: {
      const never: never = command;
      return never;
    }
  }
}
