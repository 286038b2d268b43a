import { randomUUID } from "node:crypto";
import { DeliverPolicy } from "@nats-io/jetstream";
import type { CancelMigration, MigrationEvent, StartMigration } from "#schemas/index.js";
import { decodeEvent, EventStore, aggregateOf, LIVE_CONSUME, type StoredEvent } from "#common/event-store.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { evolve, fold, initialMigration, isTerminal, type Migration } from "#migration";

const encoder = new TextEncoder();

export const newId = (prefix: string): string => `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 20)}`;

/** Publishes a command with its commandId as msgID: re-publishing the same command is a no-op. */
export async function publishCommand(nats: Nats, command: StartMigration | CancelMigration): Promise<number> {
  const subject = command.type === "StartMigration" ? subjects.startMigration : subjects.cancelMigration;
  const ack = await nats.js.publish(subject, encoder.encode(JSON.stringify(command)), { msgID: command.commandId });
  return ack.seq;
}

export async function readMigration(nats: Nats, id: string): Promise<{ state: Migration; events: StoredEvent[] }> {
  const events = await new EventStore(nats.js, nats.jsm).read(id);
  return {
    state: fold(
      id,
      events.map((e) => e.event),
    ),
    events,
  };
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
      const stored = decodeEvent(m);
      if (!stored) continue;
      state = evolve(state, stored.event);
      onEvent(stored.event, state);
      if (isTerminal(state)) break;
    }
  } finally {
    iter.stop();
  }
  return state;
}
