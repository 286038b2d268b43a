import { DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { appendHooks, secondsSince } from "../metrics/hooks.js";
import type { z } from "zod";
import { VersionConflictError } from "../errors.js";
import { AppendInFlightError, retryTransient } from "../nats.js";
import { provenanceOf, UNCHECKED, type EventTrust, type Provenance } from "../signing.js";
import { foldWith, type Aggregate, type Versioned } from "./aggregate.js";
import { isNoMessageFound, isWrongLastSequence } from "./jetstream-errors.js";
import { PubAckPipe } from "./pub-acks.js";
import { ownedCopy, signedHeaders } from "./signed-append.js";

/** One stored event, parsed: the event, its stream sequence (the aggregate's version) and subject. */
export interface Stored<E> {
  event: E;
  /** Stream sequence: the aggregate's version after this event. */
  seq: number;
  subject: string;
  /**
   * Who produced it, as far as the reader could verify (see signing.ts); absent when it was
   * decoded without a store (not checked).
   */
  provenance?: Provenance;
}

/** How events become message bodies and back. `decode` throws on anything that is not an event. */
export interface Codec<E> {
  encode(event: E): Uint8Array;
  decode(data: Uint8Array): E;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** JSON bodies, parsed by a zod schema when read: a stored event is validated once, at the edge. */
export const jsonCodec = <E>(schema: z.ZodType<E>): Codec<E> => ({
  encode: (event) => encoder.encode(JSON.stringify(event)),
  decode: (data) => schema.parse(JSON.parse(decoder.decode(data))),
});

/** Where one kind of aggregate keeps its events. */
export interface EventStoreConfig<E> {
  /** The stream that captures the aggregates' subjects (it must allow direct gets). */
  stream: string;
  /** The subject of one aggregate's events. */
  subject: (id: string) => string;
  /** A filter matching every aggregate's subject, followed by tail(). */
  allSubjects: string;
  codec: Codec<E>;
}

export interface EventStoreOptions<E = unknown> {
  /**
   * How long an append or a read keeps trying through transient NATS errors (a timeout, no
   * responders, "jetstream is not enabled" while the stream elects a leader) before it gives up
   * and throws the last one, in ms. An R3 leader election takes 4-9 s. 0: one try. Default 15000.
   */
  resendForMs?: number;
  /**
   * How long one publish waits for its PubAck before it is resent (same msgID), in ms: a publish
   * sent to a server as it died, or while no leader takes it, is given up this soon. Default 1000.
   */
  publishTimeoutMs?: number;
  /**
   * How appends are signed and reads verified (signing.ts). Default: nothing signed and every
   * event read as `unverified: not checked`, which trusting folds do not take.
   */
  trust?: EventTrust;
  /**
   * Which read events `load` folds: a reason for an event it must not (a producer not allowed to
   * make it), reported through `onRejected`. Default: every event.
   */
  admit?: (e: Stored<E>) => string | undefined;
  onRejected?: (e: Stored<E>, reason: string) => void;
}

/** An encoded message ready to append: its body and its msgID (deduplication). */
export interface OutgoingMessage {
  data: Uint8Array;
  msgID: string;
}

/** A stored message at stream sequence `seq` on `subject` that did not decode (`err` says why). */
/**
 * A stored message that failed validation, with who signed it as far as the reader can tell
 * (undefined when the reader checks no producers).
 */
export type OnInvalid = (seq: number, err: unknown, subject: string, provenance?: Provenance) => void;

/**
 * Pull requests of long-lived readers (the coordinator's command consumer, event tails) expire
 * after 2 s (idle heartbeat 1 s): a reader whose server was restarted, or whose pull a 2.12
 * cluster lost (see ONE_SHOT_CONSUME), pulls again within ~2 s instead of the client's 30 s
 * default. With 5 s, a surviving coordinator once took 6.3 s to plan the next command after its
 * peer was killed and 3.0 s to see a failed batch, on a loaded 2.12.15 cluster (35-71 ms in five
 * runs since, loaded and idle): what a lost pull and a missed heartbeat would cost.
 */
export const LIVE_CONSUME = { expires: 2_000 } as const;
/** Messages a tail asks for in one pull. */
const TAIL_BATCH = 1_000;

/**
 * One-shot readers (`read`) pull with a 2 s expiry: on a 2.12 cluster the first pull of a fresh
 * ordered consumer is sometimes lost, and with the client's 30 s default nothing arrived for ~45 s
 * (measured: 1 of 40 readers); with 2 s the worst of 40 waited 3 s.
 */
export const ONE_SHOT_CONSUME = { expires: 2_000 } as const;

/**
 * Parses one stored message and says who produced it (`trust`); a malformed one is reported
 * through `onInvalid` and yields undefined.
 */
export function decodeStored<E>(
  codec: Codec<E>,
  m: Pick<JsMsg, "data" | "seq" | "subject" | "headers">,
  onInvalid?: OnInvalid,
  trust: EventTrust = UNCHECKED,
): Stored<E> | undefined {
  try {
    const event = codec.decode(m.data);
    return { event, seq: m.seq, subject: m.subject, provenance: provenanceOf(trust, m.subject, m.headers, m.data) };
  } catch (err) {
    const provenance = trust === UNCHECKED ? undefined : provenanceOf(trust, m.subject, m.headers, m.data);
    onInvalid?.(m.seq, err, m.subject, provenance);
    return undefined;
  }
}

/**
 * Events of one kind of aggregate, one subject per aggregate. Appends carry a msgID (dedup) and
 * the expected last sequence of the subject (optimistic concurrency); an event counts as written
 * only once JetStream acknowledged it. A stale expected sequence becomes a VersionConflictError.
 */
export class EventStore<E> {
  private readonly resendForMs: number;
  private readonly publishTimeoutMs: number;
  /** Appends' PubAcks, many in flight on one subscription (undefined: a client without `nc`). */
  private readonly acks?: PubAckPipe;
  readonly trust: EventTrust;

  constructor(
    protected readonly js: JetStreamClient,
    protected readonly jsm: JetStreamManager,
    readonly config: EventStoreConfig<E>,
    private readonly opts: EventStoreOptions<E> = {},
  ) {
    this.resendForMs = opts.resendForMs ?? 15_000;
    this.publishTimeoutMs = opts.publishTimeoutMs ?? 1_000;
    this.trust = opts.trust ?? UNCHECKED;
    const nc = (js as JetStreamClient & { nc?: NatsConnection }).nc;
    if (nc !== undefined) this.acks = new PubAckPipe(nc);
  }

  /**
   * Appends events in order, one message each. `expectedSeq` is the aggregate's last sequence as
   * the caller folded it (0: no events yet); undefined appends without a check (facts reported by
   * movers). `msgID` is a base (one event: the base itself; several: `<base>.<i>`) or a function
   * of the event's index. Returns the sequence of the last event written.
   *
   * An event whose PubAck does not come (timeout, no responders, leader election) is resent with
   * the same msgID until it is acknowledged or `resendForMs` has passed: if an earlier copy was
   * stored, the server answers the resend as a duplicate with that copy's sequence, so the event
   * is stored once and the caller learns where. Only then does the last error reach the caller.
   */
  async append(
    id: string,
    events: readonly E[],
    msgID: string | ((index: number) => string),
    expectedSeq?: number,
  ): Promise<number> {
    const idOf = typeof msgID === "function" ? msgID : (i: number) => (events.length === 1 ? msgID : `${msgID}.${i}`);
    const keyed = (base: string): string => this.trust.signer?.msgId(base) ?? base;
    const messages = events.map((e, i) => ({ data: this.config.codec.encode(e), msgID: keyed(idOf(i)) }));
    return this.appendMessages(id, messages, expectedSeq);
  }

  /**
   * Appends encoded messages in order (see append). `pipelined` sends them all at once, each
   * expecting the sequence before it, so a batch lands whole or as a gap-free prefix; it needs an
   * expected sequence. A refusal of message i is reported as a conflict at `expectedSeq + i`.
   */
  async appendMessages(
    id: string,
    messages: readonly OutgoingMessage[],
    expectedSeq?: number,
    opts: { pipelined?: boolean } = {},
  ): Promise<number> {
    const subject = this.config.subject(id);
    if (opts.pipelined && expectedSeq !== undefined) {
      const acks = messages.map((m, i) => this.publish(subject, m, { lastSubjectSequence: expectedSeq + i }));
      const results = await Promise.allSettled(acks);
      let last = expectedSeq;
      for (const [i, r] of results.entries()) {
        if (r.status === "rejected") throw this.conflictOr(r.reason, subject, expectedSeq + i);
        last = r.value;
      }
      return last;
    }
    let seq = expectedSeq ?? 0;
    for (const m of messages) {
      const expect = expectedSeq === undefined ? undefined : { lastSubjectSequence: seq };
      try {
        seq = await this.publish(subject, m, expect);
      } catch (err) {
        throw this.conflictOr(err, subject, seq);
      }
    }
    return seq;
  }

  /** The sequence of the aggregate's last event, read from the stream leader (0 if none). */
  async lastSeq(id: string): Promise<number> {
    return this.throughElections(() => this.lastSeqOnce(id));
  }

  /**
   * The aggregate's last event (one direct get), with its provenance; undefined when it has none
   * or the message there does not decode (reported through `onInvalid`).
   */
  async last(id: string, onInvalid?: OnInvalid): Promise<Stored<E> | undefined> {
    const m = await this.throughElections(async () => {
      try {
        return await this.jsm.direct.getMessage(this.config.stream, { last_by_subj: this.config.subject(id) });
      } catch (err) {
        if (isNoMessageFound(err)) return null;
        throw err;
      }
    });
    if (!m) return undefined;
    return decodeStored(
      this.config.codec,
      { data: m.data, seq: m.seq, subject: m.subject, headers: m.header },
      onInvalid,
      this.trust,
    );
  }

  /** All events of one aggregate, in order; a malformed stored event is reported, not returned. */
  async read(id: string, onInvalid?: OnInvalid): Promise<Array<Stored<E>>> {
    return (await this.throughElections(() => this.readOnce(id, onInvalid))).events;
  }

  /**
   * The aggregate folded from its events, and the sequence to expect on the next append: the
   * subject's last sequence, even when the message there was malformed and not folded.
   */
  async load<S>(
    aggregate: Pick<Aggregate<S, E, never, never>, "initial" | "evolve">,
    id: string,
    onInvalid?: OnInvalid,
  ): Promise<Versioned<S>> {
    const { events, last } = await this.throughElections(() => this.readOnce(id, onInvalid));
    const admitted = events.filter((e) => {
      const reason = this.opts.admit?.(e);
      if (reason !== undefined) this.opts.onRejected?.(e, reason);
      return reason === undefined;
    });
    const state = foldWith(
      aggregate,
      id,
      admitted.map((s) => s.event),
    );
    return { state, seq: last };
  }

  /** Parses one message of this store (a malformed one is reported and yields undefined). */
  decode(m: JsMsg, onInvalid?: OnInvalid): Stored<E> | undefined {
    return decodeStored(this.config.codec, m, onInvalid, this.trust);
  }

  /**
   * Follows every aggregate's events from `fromSeq` (1: the beginning). `onEvent` runs in stream
   * order; `onCaughtUp` once the tail has reached the end of the stream as it was at start.
   */
  async tail(opts: {
    fromSeq?: number;
    filter?: string;
    onEvent: (e: Stored<E>) => Promise<void> | void;
    onCaughtUp?: () => Promise<void> | void;
    onInvalid?: OnInvalid;
  }): Promise<{ stop(): void; done: Promise<void> }> {
    // A service starting beside a young cluster waits out its elections here.
    const info = await retryTransient(() => this.jsm.streams.info(this.config.stream));
    const endSeq = info.state.last_seq;
    const from = opts.fromSeq && opts.fromSeq > 1 ? opts.fromSeq : undefined;
    const consumer = await retryTransient(() =>
      this.js.consumers.get(this.config.stream, {
        filter_subjects: opts.filter ?? this.config.allSubjects,
        deliver_policy: from ? DeliverPolicy.StartSequence : DeliverPolicy.All,
        ...(from ? { opt_start_seq: from } : {}),
      }),
    );
    // A coordinator at a thousand migrations in flight folds thousands of events a second: pull
    // them in large batches rather than the client's default of 100.
    const iter = await consumer.consume({ max_messages: TAIL_BATCH, ...LIVE_CONSUME });
    let caughtUp = false;
    const markCaughtUp = async (): Promise<void> => {
      if (caughtUp) return;
      caughtUp = true;
      await opts.onCaughtUp?.();
    };
    const done = (async () => {
      if (endSeq < (opts.fromSeq ?? 1)) await markCaughtUp();
      for await (const m of iter) {
        const stored = this.decode(m, opts.onInvalid);
        if (stored) await opts.onEvent(stored);
        if (!caughtUp && (m.info.pending === 0 || m.seq >= endSeq)) await markCaughtUp();
      }
    })();
    // A filtered stream whose last message is not ours: catch up as soon as nothing is pending.
    if (!caughtUp && endSeq > 0) {
      const ci = await consumer.info(true).catch(() => undefined);
      if (ci && ci.num_pending === 0 && ci.delivered.stream_seq === 0) await markCaughtUp();
    }
    return { stop: () => iter.stop(), done };
  }

  /** A wrong-last-sequence refusal as a VersionConflictError; anything else as it is. */
  private conflictOr(err: unknown, subject: string, expected: number): unknown {
    return isWrongLastSequence(err) ? new VersionConflictError(subject, expected, { cause: err }) : err;
  }

  /** One publish, resent with the same msgID through transient errors; resolves with its sequence. */
  private async publish(
    subject: string,
    m: OutgoingMessage,
    expect?: { lastSubjectSequence: number },
  ): Promise<number> {
    const headers = signedHeaders(this.trust, subject, m);
    const started = performance.now();
    let tries = 0;
    return this.throughElections(async () => {
      tries++;
      try {
        const o = { msgID: m.msgID, expect, timeout: this.publishTimeoutMs, ...(headers ? { headers } : {}) };
        const ack = await (this.acks ? this.acks.publish(subject, m.data, o) : this.js.publish(subject, m.data, o));
        if (ack.duplicate && ack.seq === 0) throw new AppendInFlightError(subject, m.msgID);
        // A duplicate is only ours if the stored copy is: else someone squatted the msgID.
        if (ack.duplicate) await ownedCopy(this.jsm, this.config.stream, ack.seq, subject, m, this.trust);
        return ack.seq;
      } catch (err) {
        // A server may check the expected sequence before the msgID (a single 2.12.15 does; 2.9.10
        // answers "duplicate"): a resend, or a retry of the same append by its caller, whose
        // earlier copy was stored is then refused with "wrong last sequence". That copy, if
        // stored, is the subject's first message after the expected one (others, e.g. a mover's
        // facts, may have followed it): if it carries our msgID, the append is done.
        if (expect !== undefined && isWrongLastSequence(err)) {
          const next = await this.jsm.direct.getMessage(this.config.stream, {
            next_by_subj: subject,
            seq: expect.lastSubjectSequence + 1,
          });
          if (next?.header.get("Nats-Msg-Id") === m.msgID) {
            await ownedCopy(this.jsm, this.config.stream, next.seq, subject, m, this.trust);
            return next.seq;
          }
        }
        throw err;
      }
    }).finally(() => appendHooks.observe(secondsSince(started), tries - 1));
  }

  /** `fn` again through transient NATS errors (an election), for up to `resendForMs`. */
  private async throughElections<T>(fn: () => Promise<T>): Promise<T> {
    return retryTransient(fn, { forMs: this.resendForMs });
  }

  private async lastSeqOnce(id: string): Promise<number> {
    try {
      const m = await this.jsm.streams.getMessage(this.config.stream, { last_by_subj: this.config.subject(id) });
      return m?.seq ?? 0;
    } catch (err) {
      if (isNoMessageFound(err)) return 0;
      throw err;
    }
  }

  private async readOnce(id: string, onInvalid?: OnInvalid): Promise<{ events: Array<Stored<E>>; last: number }> {
    const last = await this.lastSeqOnce(id);
    if (last === 0) return { events: [], last };
    const out: Array<Stored<E>> = [];
    const consumer = await this.js.consumers.get(this.config.stream, { filter_subjects: this.config.subject(id) });
    const iter = await consumer.consume(ONE_SHOT_CONSUME);
    try {
      for await (const m of iter) {
        const stored = this.decode(m, onInvalid);
        if (stored) out.push(stored);
        if (m.seq >= last) break;
      }
    } finally {
      iter.stop();
    }
    return { events: out, last };
  }
}
