import { DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { describeInvalid, type Command, type MigrationEvent } from "#schemas/index.js";
import { decodeEvent, LIVE_CONSUME, type StoredEvent } from "#common/event-store.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { INSECURE, type EventTrust } from "#common/signing.js";
import {
  evolveInvalid,
  evolveTrusted,
  initialMigration,
  isTerminal,
  type InvalidInput,
  type Migration,
} from "#migration";

/** How a command ended: the migration's outcome (for a start), done (for a cancel or a change), or refused. */
export type CommandOutcome =
  | { kind: "ended"; state: Migration }
  | { kind: "refused"; reason: string; message: string; state: Migration };

/** No coordinator decided on the command in time (none running, or the stack is overloaded). */
export class NoAnswerError extends Error {
  readonly code = "NO_ANSWER" as const;
  constructor(what: string, seconds: number, seq: number) {
    super(
      `no coordinator answered ${what} within ${seconds} s; it stays queued (DWCP_CMD sequence ${seq}): ` +
        "is a coordinator running (dwcp up)?",
    );
  }
}

/**
 * Follows a published command to its real outcome, whichever subject it lands on: the migration
 * it names (its events, a CommandRejected for this command), or cmd-<seq> where the coordinator
 * files rejections of commands that name no migration. A StartMigration reusing another
 * command's id is not taken for that migration: only the refusal answers it. `onEvent` sees each
 * event of this command's migration with the state folded so far.
 */
export async function followCommand(
  nats: Nats,
  command: Command,
  commandSeq: number,
  opts: {
    onEvent?: (e: MigrationEvent, s: Migration) => void;
    signal?: AbortSignal;
    trust?: EventTrust;
    timeoutMs?: number;
  } = {},
): Promise<CommandOutcome> {
  const id = command.migrationId ?? command.commandId;
  const trust = opts.trust ?? INSECURE;
  const stops: Array<() => void> = [];
  const stopAll = (): void => stops.forEach((stop) => stop());
  opts.signal?.addEventListener("abort", stopAll, { once: true });
  let timedOut = false;
  const timer =
    opts.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          stopAll();
        }, opts.timeoutMs);
  let state = initialMigration(id);
  // The migration's subject: its events, and this command's refusal.
  const named = eachMessage(nats, subjects.migration(id), stops, (m): CommandOutcome | undefined => {
    const { state: next, taken: stored } = foldMessage(state, m, trust);
    state = next;
    if (!stored) return state.status === "set-aside" && ours(command, state) ? { kind: "ended", state } : undefined;
    const e = stored.event;
    if (e.type === "CommandRejected" && e.commandId === command.commandId)
      return { kind: "refused", reason: e.reason, message: e.message, state };
    const verdict = outcomeOf(command, e, state);
    if (verdict === "ended" || ours(command, state)) opts.onEvent?.(e, state);
    return verdict === "ended" ? { kind: "ended", state } : undefined;
  });
  // cmd-<seq>: where a refusal of a command that names no migration lands.
  const fallback = eachMessage(
    nats,
    subjects.migration(`cmd-${commandSeq}`),
    stops,
    (m): CommandOutcome | undefined => {
      const e = decodeEvent(m, undefined, trust)?.event;
      return e?.type === "MigrationRejected" && (e.commandId ?? command.commandId) === command.commandId
        ? { kind: "refused", reason: e.reason, message: e.message, state }
        : undefined;
    },
  );
  try {
    const outcome = await Promise.race([named, fallback]);
    if (outcome !== undefined) return outcome;
    if (timedOut)
      throw new NoAnswerError(`${command.type} ${command.commandId}`, (opts.timeoutMs ?? 0) / 1000, commandSeq);
    return { kind: "ended", state };
  } finally {
    clearTimeout(timer);
    stopAll();
    await Promise.allSettled([named, fallback]);
  }
}

/**
 * One message of a migration's subject folded into its state, as the coordinator folds it: `taken`
 * is the event when the fold took it. An event its producer may not make is ignored input; a
 * message that fails validation sets the migration aside (from a producer this stack trusts) or
 * is ignored (from anyone else).
 */
export function foldMessage(state: Migration, m: JsMsg, trust: EventTrust): { state: Migration; taken?: StoredEvent } {
  let invalid: InvalidInput | undefined;
  const stored = decodeEvent(
    m,
    (seq, err, _subject, provenance) => (invalid = { seq, problem: describeInvalid(err), provenance }),
    trust,
  );
  if (!stored) return { state: invalid === undefined ? state : evolveInvalid(state, invalid) };
  const next = evolveTrusted(state, stored);
  return (next.ignored?.count ?? 0) === (state.ignored?.count ?? 0) ? { state: next, taken: stored } : { state: next };
}

/**
 * Reads one subject of the event stream from its start, live, until `take` returns a value (or
 * a stop in `stops` ends it: then undefined).
 */
async function eachMessage<T>(
  nats: Nats,
  subject: string,
  stops: Array<() => void>,
  take: (m: JsMsg) => T | undefined,
): Promise<T | undefined> {
  let stopped = false;
  let stopIter = (): void => undefined;
  stops.push(() => {
    stopped = true;
    stopIter();
  });
  const consumer = await nats.js.consumers.get(EVT_STREAM, {
    filter_subjects: subject,
    deliver_policy: DeliverPolicy.All,
  });
  const iter = await consumer.consume(LIVE_CONSUME);
  stopIter = () => iter.stop();
  if (stopped) iter.stop();
  try {
    for await (const m of iter) {
      const v = take(m);
      if (v !== undefined) return v;
    }
    return undefined;
  } finally {
    iter.stop();
  }
}

/** Whether the migration folded so far is the one this command started (not another's with its id). */
const ours = (command: Command, s: Migration): boolean =>
  command.type !== "StartMigration" || s.request?.commandId === command.commandId;

function outcomeOf(command: Command, e: MigrationEvent, s: Migration): "ended" | "pending" {
  if (command.type === "CancelMigration")
    return e.type === "MigrationCancelled" && e.commandId === command.commandId ? "ended" : "pending";
  if (command.type === "SetMigrationOptions")
    return e.type === "MigrationOptionsChanged" && e.commandId === command.commandId ? "ended" : "pending";
  // A start's own rejection (MigrationRejected) names it; any other end counts only for its own migration.
  if (e.type === "MigrationRejected" && e.commandId === command.commandId) return "ended";
  return ours(command, s) && isTerminal(s) ? "ended" : "pending";
}
