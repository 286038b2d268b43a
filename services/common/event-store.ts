import type { JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import { MigrationEvent } from "#schemas/index.js";
import {
  decodeStored,
  EventStore as AggregateStore,
  jsonCodec,
  type EventStoreConfig,
  type EventStoreOptions,
  type OnInvalid,
  type Stored,
} from "./event-sourcing/event-store.js";
import { EVT_STREAM, subjects } from "./layout.js";
import type { EventTrust } from "./signing.js";

export { LIVE_CONSUME, ONE_SHOT_CONSUME, type EventStoreOptions } from "./event-sourcing/event-store.js";

/** One stored migration event. */
export type StoredEvent = Stored<MigrationEvent>;

/** Migrations keep their events on dwcp.evt.migration.<id> in DWCP_EVT. */
export const migrationEvents: EventStoreConfig<MigrationEvent> = {
  stream: EVT_STREAM,
  subject: subjects.migration,
  allSubjects: subjects.migrationEvents,
  codec: jsonCodec(MigrationEvent),
};

/** The migration id a subject dwcp.evt.migration.<id> belongs to. */
export const aggregateOf = (subject: string): string => subject.slice(subject.lastIndexOf(".") + 1);

/**
 * The migrations' event store: the event-sourcing core's store over DWCP_EVT's migration
 * subjects, shared by the coordinator, the movers (facts, appended unchecked) and the CLI.
 */
export class EventStore extends AggregateStore<MigrationEvent> {
  constructor(js: JetStreamClient, jsm: JetStreamManager, opts: EventStoreOptions<MigrationEvent> = {}) {
    super(js, jsm, migrationEvents, opts);
  }
}

/**
 * A stored migration event, validated, with its producer as `trust` verifies it; a malformed one
 * is reported and yields undefined.
 */
export function decodeEvent(m: JsMsg, onInvalid?: OnInvalid, trust?: EventTrust): StoredEvent | undefined {
  return decodeStored(migrationEvents.codec, m, onInvalid, trust);
}
