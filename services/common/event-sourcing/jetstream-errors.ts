import { JetStreamApiError } from "@nats-io/jetstream";

// JetStream's numeric error codes are named here and nowhere else: the rest of the code tests
// for what happened, not for a number.

/** 10071: `expect.lastSubjectSequence` (or `lastSequence`) did not hold; somebody appended first. */
export const isWrongLastSequence = (err: unknown): boolean => err instanceof JetStreamApiError && err.code === 10071;

/** 10037: a get by subject or sequence found no message (an aggregate with no events yet). */
export const isNoMessageFound = (err: unknown): boolean => err instanceof JetStreamApiError && err.code === 10037;

/** 10059: the stream does not exist. */
export const isStreamNotFound = (err: unknown): boolean => err instanceof JetStreamApiError && err.code === 10059;

/** Any refusal answered by the JetStream API (as opposed to a transport failure). */
export const isJetStreamApiError = (err: unknown): boolean => err instanceof JetStreamApiError;
