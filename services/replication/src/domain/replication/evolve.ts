import type { ReplicationEvent } from "#schemas/replication.js";
import { initialReplication, type Replication } from "./state.js";

/**
 * Folds one replication event. Never throws; a snapshot committed twice (a retried append) or a
 * prune naming unknown ids leaves the state unchanged.
 */
export function evolve(state: Replication, event: ReplicationEvent): Replication {
  const s: Replication = { ...state, eventCount: state.eventCount + 1 };
  switch (event.type) {
    case "SnapshotCommitted": {
      if (state.snapshots.some((x) => x.snapshotId === event.snapshotId) || state.pruned.includes(event.snapshotId))
        return s;
      const { type: _t, version: _v, vm: _vm, at, ...snap } = event;
      return { ...s, snapshots: [...state.snapshots, { ...snap, committedAt: at }], lastCommittedAt: at };
    }
    case "SnapshotsPruned": {
      const gone = new Set(event.snapshotIds);
      const known = state.snapshots.filter((x) => gone.has(x.snapshotId)).map((x) => x.snapshotId);
      if (known.length === 0) return s;
      return {
        ...s,
        snapshots: state.snapshots.filter((x) => !gone.has(x.snapshotId)),
        pruned: [...state.pruned, ...known],
      };
    }
    default: {
      const never: never = event;
      return never;
    }
  }
}

export const fold = (vm: string, events: Iterable<ReplicationEvent>, from?: Replication): Replication => {
  let r = from ?? initialReplication(vm);
  for (const e of events) r = evolve(r, e);
  return r;
};
