import { MAX_BATCHES, planProblem, truncateText, type MigrationEvent } from "#schemas/index.js";
import {
  emptyTotals,
  isTerminal,
  REFUSED_KEPT,
  setAside,
  UNREACHABLE,
  type BatchState,
  type Migration,
} from "./state.js";
import { evolveLive, requestedLive } from "./live.js";

/**
 * Folds one event into the migration. Never throws; facts that arrive late or twice (a batch
 * transferred again after redelivery, a transfer after cancellation) leave the state unchanged.
 * An event the migration cannot be folded past (an impossible plan, or anything that makes the
 * fold throw) sets the migration aside with the reason; later events leave it so.
 */
export function evolve(state: Migration, event: MigrationEvent): Migration {
  try {
    return evolveOrThrow(state, event);
  } catch (err) {
    const why = truncateText(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    return setAside({ ...state, eventCount: state.eventCount + 1 }, `${event.type} could not be folded: ${why}`);
  }
}

/** The message of a migration set aside by an event that failed validation. */
export const invalidEventMessage = (problem: string): string =>
  `an event failed validation and cannot be folded: ${truncateText(problem)}`;

function evolveOrThrow(state: Migration, event: MigrationEvent): Migration {
  const s: Migration = { ...state, eventCount: state.eventCount + 1 };
  switch (event.type) {
    case "MigrationRequested": {
      if (state.status !== "none") return s;
      const { type: _t, version: _v, at, migrationId: _m, ...request } = event;
      const requested: Migration = { ...s, status: "requested", request, options: event.options, requestedAt: at };
      return event.mode === "live" ? { ...requested, live: requestedLive() } : requested;
    }
    case "MigrationRejected":
      if (isTerminal(state)) return s;
      return { ...s, status: "rejected", reason: event.reason, message: event.message, endedAt: event.at };
    case "MigrationPlanned": {
      if (state.status !== "requested") return s;
      const problem = event.batchCount > MAX_BATCHES ? `batchCount exceeds ${MAX_BATCHES}` : planProblem(event);
      if (problem !== undefined) return setAside(s, `MigrationPlanned is impossible: ${truncateText(problem)}`);
      const { type: _t, version: _v, at: _a, migrationId: _m, ...plan } = event;
      const batches: BatchState[] = Array.from({ length: event.batchCount }, () => ({ status: "pending", attempt: 0 }));
      return { ...s, status: "planned", plan, batches };
    }
    case "ChunkBatchTransferred":
      return withBatch(
        s,
        event.batch,
        (b) => {
          if (b.status === "done") return undefined;
          return { ...b, status: "done", chunks: event.chunks };
        },
        (m) => ({
          status: m.status === "planned" ? "running" : m.status,
          totals: addTransfer(m.totals, event),
        }),
      );
    case "ChunkBatchFailed":
      return withBatch(s, event.batch, (b) => {
        if (b.status === "done" || event.attempt !== b.attempt) return undefined;
        const { code, retryable, message, attempt, host } = event;
        const failed: BatchState = { ...b, status: "failed", lastFailure: { code, retryable, message, attempt, host } };
        if (code === UNREACHABLE) return { ...failed, unreachableSince: b.unreachableSince ?? event.at };
        const { unreachableSince: _u, ...rest } = failed;
        return { ...rest, chargedFailures: (b.chargedFailures ?? 0) + 1 };
      });
    case "ChunkBatchRetried":
      return withBatch(s, event.batch, (b) => {
        if (b.status === "done" || event.attempt <= b.attempt) return undefined;
        return { ...b, status: "pending", attempt: event.attempt, notBefore: event.notBefore };
      });
    case "MigrationCompleted":
      if (isTerminal(state)) return s;
      return { ...s, status: "completed", totals: { ...emptyTotals(), ...event.totals }, endedAt: event.at };
    case "MigrationFailed":
      if (isTerminal(state)) return s;
      return { ...s, status: "failed", reason: event.code, message: event.message, endedAt: event.at };
    case "MigrationCancelled":
      if (isTerminal(state)) return s;
      return {
        ...s,
        status: "cancelled",
        reason: "CANCELLED",
        message: event.reason ?? "cancelled",
        endedAt: event.at,
        cancelledBy: event.commandId,
      };
    case "MigrationOptionsChanged":
      if (isTerminal(state) || state.options === undefined) return s;
      return {
        ...s,
        options: {
          ...state.options,
          bandwidthLimitBytesPerSec: event.bandwidthLimitBytesPerSec,
          weight: event.weight,
          priority: event.priority,
        },
        optionsSetBy: event.commandId,
      };
    case "CommandRejected": {
      // The refused command changes nothing about the migration: noted apart from its outcome.
      const previous = state.refusedCommands ?? { count: 0, recent: [] };
      const entry = { commandId: event.commandId, reason: event.reason, at: event.at };
      return {
        ...s,
        refusedCommands: { count: previous.count + 1, recent: [...previous.recent, entry].slice(-REFUSED_KEPT) },
      };
    }
    case "LiveMigrationStarted":
    case "LiveMigrationProgress":
    case "LiveMigrationCompleted":
    case "LiveMigrationFailed":
      return evolveLive(s, state, event);
    default: {
      const never: never = event;
      return never;
    }
  }
}

/**
 * Applies `change` to one batch of an active migration; `undefined` from change means no-op.
 * `also` gives the other fields that change with it, so the new state is built once (a replay
 * folds this a million times).
 */
function withBatch(
  s: Migration,
  index: number,
  change: (b: BatchState) => BatchState | undefined,
  also?: (m: Migration) => Partial<Migration>,
): Migration {
  if (isTerminal(s)) return s;
  const current = s.batches[index];
  if (current === undefined) {
    // No work item of a planned migration names a batch beyond its plan: the event is impossible.
    if (s.plan === undefined) return s;
    return setAside(s, `batch ${index} is not in the plan (${s.batches.length} batches)`);
  }
  const next = change(current);
  if (next === undefined) return s;
  const batches = s.batches.slice();
  batches[index] = next;
  return also ? { ...s, ...also(s), batches } : { ...s, batches };
}

function addTransfer(
  t: Migration["totals"],
  e: {
    bytes: number;
    wireBytes: number;
    chunks: Array<{ zero: boolean; length: number }>;
    breakdown?: { zeroSkipped: number; packedIn: number; packedOut: number; baseReused?: number | undefined };
  },
): Migration["totals"] {
  const zeroBytes = e.chunks.reduce((n, c) => n + (c.zero ? c.length : 0), 0);
  return {
    bytes: t.bytes + e.bytes,
    zeroBytes: t.zeroBytes + zeroBytes,
    wireBytes: t.wireBytes + e.wireBytes,
    chunks: t.chunks + e.chunks.length,
    batches: t.batches + 1,
    // A batch of a mover that reports no breakdown counts its zero chunks as skipped.
    zeroSkippedBytes: t.zeroSkippedBytes + (e.breakdown?.zeroSkipped ?? zeroBytes),
    packedInBytes: t.packedInBytes + (e.breakdown?.packedIn ?? 0),
    packedOutBytes: t.packedOutBytes + (e.breakdown?.packedOut ?? 0),
    baseReusedBytes: (t.baseReusedBytes ?? 0) + (e.breakdown?.baseReused ?? 0),
  };
}

export const fold = (id: string, events: Iterable<MigrationEvent>, from?: Migration): Migration => {
  let m = from ?? { id, status: "none" as const, batches: [], totals: emptyTotals(), eventCount: 0 };
  for (const e of events) m = evolve(m, e);
  return m;
};
