import { randomUUID } from "node:crypto";
import { DeliverPolicy } from "@nats-io/jetstream";
import { describeInvalid, type CancelMigration, type MigrationEvent, type StartMigration } from "#schemas/index.js";
import { decodeEvent, EventStore, aggregateOf, LIVE_CONSUME, type StoredEvent } from "#common/event-store.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { evolve, initialMigration, invalidEventMessage, isTerminal, setAside, type Migration } from "#migration";

const encoder = new TextEncoder();

export const newId = (prefix: string): string => `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 20)}`;

/** Publishes a command with its commandId as msgID: re-publishing the same command is a no-op. */
export async function publishCommand(nats: Nats, command: StartMigration | CancelMigration): Promise<number> {
  const subject = command.type === "StartMigration" ? subjects.startMigration : subjects.cancelMigration;
  const ack = await nats.js.publish(subject, encoder.encode(JSON.stringify(command)), { msgID: command.commandId });
  return ack.seq;
}

export async function readMigration(nats: Nats, id: string): Promise<{ state: Migration; events: StoredEvent[] }> {
  const invalid: Array<{ seq: number; problem: string }> = [];
  const events = await new EventStore(nats.js, nats.jsm).read(id, (seq, err) =>
    invalid.push({ seq, problem: describeInvalid(err) }),
  );
  return { state: foldStored(id, events, invalid), events };
}

/**
 * One migration from its stored events and the sequences of those that failed validation: the
 * first invalid one sets it aside (as the coordinator does), with what was folded before it.
 */
export function foldStored(
  id: string,
  events: readonly StoredEvent[],
  invalid: ReadonlyArray<{ seq: number; problem: string }> = [],
): Migration {
  const firstInvalid = invalid.reduce<{ seq: number; problem: string } | undefined>(
    (a, b) => (a === undefined || b.seq < a.seq ? b : a),
    undefined,
  );
  let m = initialMigration(id);
  for (const e of events) {
    if (firstInvalid !== undefined && e.seq > firstInvalid.seq) break;
    m = evolve(m, e.event);
  }
  return firstInvalid === undefined ? m : setAside(m, invalidEventMessage(firstInvalid.problem));
}

/** Folds every migration in the stream, as of now. */
export async function listMigrations(nats: Nats): Promise<Migration[]> {
  const byId = new Map<string, Migration>();
  let caughtUp!: () => void;
  const done = new Promise<void>((r) => (caughtUp = r));
  const tail = await new EventStore(nats.js, nats.jsm).tail({
    onEvent: (e) => {
      const id = aggregateOf(e.subject);
      byId.set(id, evolve(byId.get(id) ?? initialMigration(id), e.event));
    },
    onCaughtUp: () => caughtUp(),
    onInvalid: (_seq, err, subject) => {
      const id = aggregateOf(subject);
      byId.set(id, setAside(byId.get(id) ?? initialMigration(id), invalidEventMessage(describeInvalid(err))));
    },
  });
  await done;
  tail.stop();
  return [...byId.values()].sort((a, b) => (a.requestedAt ?? "").localeCompare(b.requestedAt ?? ""));
}

/**
 * Follows one migration's events from the beginning until it ends; `onEvent` sees each event with
 * the state folded so far. Resolves with the final state.
 */
export async function watchMigration(
  nats: Nats,
  id: string,
  onEvent: (event: MigrationEvent, state: Migration) => void,
  signal?: AbortSignal,
): Promise<Migration> {
  const consumer = await nats.js.consumers.get(EVT_STREAM, {
    filter_subjects: subjects.migration(id),
    deliver_policy: DeliverPolicy.All,
  });
  const iter = await consumer.consume(LIVE_CONSUME);
  signal?.addEventListener("abort", () => iter.stop(), { once: true });
  let state = initialMigration(id);
  try {
    for await (const m of iter) {
      let problem: string | undefined;
      const stored = decodeEvent(m, (_seq, err) => (problem = describeInvalid(err)));
      if (!stored) {
        // An event no fold can take ends the migration as the coordinator sees it: set aside.
        if (problem !== undefined) state = setAside(state, invalidEventMessage(problem));
        if (isTerminal(state)) break;
        continue;
      }
      state = evolve(state, stored.event);
      onEvent(stored.event, state);
      if (isTerminal(state)) break;
    }
  } finally {
    iter.stop();
  }
  return state;
}
