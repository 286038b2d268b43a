import type { MigrationEvent } from "#schemas/index.js";
import { evolve, invalidEventMessage } from "./evolve.js";
import { liveEventRefusal } from "./live.js";
import { initialMigration, setAside, type IgnoredInput, type Migration } from "./state.js";

// Who may make which migration event. Decisions come only from a coordinator; a mover's facts
// about a batch only from the mover of the host the batch was assigned to (the source host), for
// an attempt that was handed out. The check is pure: the reader verified the signature (infra)
// and passes what it found as the event's provenance.

/** Who produced an event, as the reader verified it (common/signing.ts Provenance fits). */
export type Producer =
  | { kind: "signed"; principal: { role: string; host?: string } }
  /** The reader runs insecure (DWCP_EVENTS_UNSIGNED=on): every producer is taken at its word. */
  | { kind: "insecure" }
  | { kind: "unverified"; reason: string };

/** An event as read, with where it stood and who produced it. */
export interface ProducedEvent {
  event: MigrationEvent;
  seq: number;
  provenance?: Producer;
}

/** How many ignored events a migration keeps the details of (the count is exact). */
export const IGNORED_KEPT = 10;

/**
 * Why `event` must not be folded into `state`, or undefined when its producer may make it.
 * Unsigned and unverifiable events are refused unless the reader is insecure.
 */
export function refusal(state: Migration, event: MigrationEvent, producer: Producer | undefined): string | undefined {
  if (producer === undefined) return "unverified: not checked";
  if (producer.kind === "insecure") return undefined;
  if (producer.kind === "unverified") return `unverified: ${producer.reason}`;
  const { role } = producer.principal;
  switch (event.type) {
    case "MigrationRequested":
    case "MigrationRejected":
    case "MigrationPlanned":
    case "ChunkBatchRetried":
    case "MigrationCompleted":
    case "MigrationFailed":
    case "MigrationCancelled":
    case "MigrationOptionsChanged":
    case "CommandRejected":
      return role === "coordinator" ? undefined : `${role} may not record ${event.type}`;
    case "ChunkBatchFailed":
      // The coordinator records a batch failure itself when a work item ran out of deliveries.
      return role === "coordinator" ? undefined : batchFactRefusal(state, event, role);
    case "ChunkBatchTransferred":
      return batchFactRefusal(state, event, role);
    case "LiveMigrationStarted":
    case "LiveMigrationProgress":
    case "LiveMigrationCompleted":
    case "LiveMigrationFailed":
      return liveEventRefusal(state, event, role);
    default: {
      const never: never = event;
      return never;
    }
  }
}

/** A mover's fact about a batch: only from the mover of the batch's host, for an attempt handed out. */
function batchFactRefusal(
  state: Migration,
  event: Extract<MigrationEvent, { type: "ChunkBatchTransferred" | "ChunkBatchFailed" }>,
  role: string,
): string | undefined {
  const assigned = state.request?.source.host;
  if (assigned === undefined) return `${event.type} before the migration was requested`;
  if (role !== `mover-${assigned}` || event.host !== assigned)
    return `${role} may not report batches assigned to host ${assigned}`;
  const batch = state.batches[event.batch];
  if (batch !== undefined && event.attempt > batch.attempt)
    return `attempt ${event.attempt} of batch ${event.batch} was never handed out`;
  return undefined;
}

/** Folds one read event if its producer may make it; else notes it as ignored input. */
export function evolveTrusted(state: Migration, e: ProducedEvent): Migration {
  const reason = refusal(state, e.event, e.provenance);
  if (reason === undefined) return evolve(state, e.event);
  const previous = state.ignored ?? { count: 0, recent: [] };
  const entry: IgnoredInput = { seq: e.seq, type: e.event.type, reason };
  return { ...state, ignored: { count: previous.count + 1, recent: [...previous.recent, entry].slice(-IGNORED_KEPT) } };
}

/** A migration folded from read events, each taken only from a producer allowed to make it. */
export function foldTrusted(id: string, events: Iterable<ProducedEvent>, from?: Migration): Migration {
  let m = from ?? initialMigration(id);
  for (const e of events) m = evolveTrusted(m, e);
  return m;
}

/** A stored message of a migration that failed validation, with who (if anyone) signed it. */
export interface InvalidInput {
  seq: number;
  /** What was wrong with it (bounded, for the reason). */
  problem: string;
  /** Undefined: read without checking producers (a library caller with no trust configured). */
  provenance?: Producer;
}

/**
 * A message no fold can take. From a producer this deployment trusts (or read unchecked, or in
 * insecure mode) it sets its migration aside: the log is wrong and a person must look. From
 * anyone else it is ignored input, so a forger cannot stop a migration by writing junk to it.
 */
export function evolveInvalid(state: Migration, input: InvalidInput): Migration {
  const p = input.provenance;
  if (p === undefined || p.kind !== "unverified") return setAside(state, invalidEventMessage(input.problem));
  const previous = state.ignored ?? { count: 0, recent: [] };
  const entry: IgnoredInput = { seq: input.seq, type: "invalid", reason: `unverified (${p.reason}) and invalid` };
  return { ...state, ignored: { count: previous.count + 1, recent: [...previous.recent, entry].slice(-IGNORED_KEPT) } };
}
