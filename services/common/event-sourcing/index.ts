// The event-sourcing core every aggregate uses: a store per kind of aggregate, the command loop,
// and the JetStream refusals it names.
export { foldWith, type Aggregate, type Versioned } from "./aggregate.js";
export {
  decodeStored,
  EventStore,
  jsonCodec,
  LIVE_CONSUME,
  ONE_SHOT_CONSUME,
  type Codec,
  type EventStoreConfig,
  type EventStoreOptions,
  type OnInvalid,
  type OutgoingMessage,
  type Stored,
} from "./event-store.js";
export {
  DEFAULT_MAX_ATTEMPTS,
  handle,
  storePort,
  type Command,
  type CommandPort,
  type Handled,
  type HandleOptions,
} from "./handle.js";
export { DedupIdSquattedError } from "./signed-append.js";
export { isJetStreamApiError, isNoMessageFound, isStreamNotFound, isWrongLastSequence } from "./jetstream-errors.js";
