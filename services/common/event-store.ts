import {
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { MigrationEvent } from "#schemas/index.js";
import { VersionConflictError } from "./errors.js";
import { EVT_STREAM, subjects } from "./layout.js";
import { AppendInFlightError, retryTransient } from "./nats.js";

export interface StoredEvent {
  event: MigrationEvent;
  /** Stream sequence: the aggregate's version after this event. */
  seq: number;
  subject: string;
}

const encoder = new TextEncoder();

/**
 * Pull requests of long-lived readers expire after 5 s (idle heartbeat 2.5 s), so a reader whose
 * server was restarted notices within ~5 s and resumes, instead of the client's 30 s default.
 */
export const LIVE_CONSUME = { expires: 5_000 } as const;
/**
 * One-shot readers (`read`) pull with a 2 s expiry: on a 2.12 cluster the first pull of a fresh
 * ordered consumer is sometimes lost, and with the client's 30 s default nothing arrived for ~45 s
 * (measured: 1 of 40 readers); with 2 s the worst of 40 waited 3 s.
 */
export const ONE_SHOT_CONSUME = { expires: 2_000 } as const;
const decoder = new TextDecoder();

export interface EventStoreOptions {
  /**
   * How long an append or a read keeps trying through transient NATS errors (a timeout, no
   * responders, "jetstream is not enabled" while the stream elects a leader) before it gives up
   * and throws the last one, in ms. An R3 leader election takes 4-9 s. Default 15000.
   */
  resendForMs?: number;
  /**
   * How long one publish waits for its PubAck before it is resent (same msgID), in ms: a publish
   * sent to a server as it died, or while no leader takes it, is given up this soon. Default 1000.
   */
  publishTimeoutMs?: number;
}

/** The migration id a subject dwcp.evt.migration.<id> belongs to. */
export const aggregateOf = (subject: string): string => subject.slice(subject.lastIndexOf(".") + 1);

/**
 * Events live on one subject per migration in DWCP_EVT. Appends carry a msgID (dedup) and the
 * expected last sequence of the subject (optimistic concurrency); an event counts as written only
 * once JetStream acknowledged it.
 */
export class EventStore {
  private readonly resendForMs: number;
  private readonly publishTimeoutMs: number;

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    opts: EventStoreOptions = {},
  ) {
    this.resendForMs = opts.resendForMs ?? 15_000;
    this.publishTimeoutMs = opts.publishTimeoutMs ?? 1_000;
  }

  /**
   * Appends events in order. `expectedSeq` is the aggregate's last sequence as the caller folded
   * it (0: no events yet); undefined appends without a check (facts reported by movers).
   * Returns the sequence of the last event written.
   *
   * An event whose PubAck does not come (timeout, no responders, leader election) is resent with
   * the same msgID until it is acknowledged or `resendForMs` has passed: if an earlier copy was
   * stored, the server answers the resend as a duplicate with that copy's sequence, so the event
   * is stored once and the caller learns where. Only then does the last error reach the caller.
   */
  async append(id: string, events: MigrationEvent[], msgIdBase: string, expectedSeq?: number): Promise<number> {
    const subject = subjects.migration(id);
    let seq = expectedSeq ?? 0;
    for (const [i, event] of events.entries()) {
      const expect = expectedSeq === undefined ? undefined : { lastSubjectSequence: seq };
      const msgID = events.length === 1 ? msgIdBase : `${msgIdBase}.${i}`;
      try {
        seq = await this.publish(subject, encoder.encode(JSON.stringify(event)), msgID, expect);
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === 10071)
          throw new VersionConflictError(subject, seq, { cause: err });
        throw err;
      }
    }
    return seq;
  }

  /** The sequence of the aggregate's last event, read from the stream leader (0 if none). */
  async lastSeq(id: string): Promise<number> {
    return this.throughElections(() => this.lastSeqOnce(id));
  }

  /** All events of one migration, in order; a malformed stored event is reported, not folded. */
  async read(id: string, onInvalid?: (seq: number, err: unknown) => void): Promise<StoredEvent[]> {
    return this.throughElections(() => this.readOnce(id, onInvalid));
  }

  /** One publish, resent with the same msgID through transient errors; resolves with its sequence. */
  private async publish(
    subject: string,
    data: Uint8Array,
    msgID: string,
    expect?: { lastSubjectSequence: number },
  ): Promise<number> {
    let resend = false;
    return this.throughElections(async () => {
      try {
        const ack = await this.js.publish(subject, data, { msgID, expect, timeout: this.publishTimeoutMs });
        if (ack.duplicate && ack.seq === 0) throw new AppendInFlightError(subject, msgID);
        return ack.seq;
      } catch (err) {
        // A server may check the expected sequence before the msgID (a single 2.12.15 does; 2.9.10
        // answers "duplicate"): a resend whose earlier copy was stored is then refused with
        // "wrong last sequence". That copy, if stored, is the subject's first message after the
        // expected one (others, e.g. a mover's facts, may have followed it): if it carries our
        // msgID, the append is done.
        if (resend && expect !== undefined && err instanceof JetStreamApiError && err.code === 10071) {
          const next = await this.jsm.direct.getMessage(EVT_STREAM, {
            next_by_subj: subject,
            seq: expect.lastSubjectSequence + 1,
          });
          if (next?.header.get("Nats-Msg-Id") === msgID) return next.seq;
        }
        throw err;
      } finally {
        resend = true;
      }
    });
  }

  /** `fn` again through transient NATS errors (an election), for up to `resendForMs`. */
  private async throughElections<T>(fn: () => Promise<T>): Promise<T> {
    return retryTransient(fn, { forMs: this.resendForMs });
  }

  private async lastSeqOnce(id: string): Promise<number> {
    try {
      const m = await this.jsm.streams.getMessage(EVT_STREAM, { last_by_subj: subjects.migration(id) });
      return m?.seq ?? 0;
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === 10037) return 0;
      throw err;
    }
  }

  private async readOnce(id: string, onInvalid?: (seq: number, err: unknown) => void): Promise<StoredEvent[]> {
    const last = await this.lastSeqOnce(id);
    if (last === 0) return [];
    const out: StoredEvent[] = [];
    const consumer = await this.js.consumers.get(EVT_STREAM, { filter_subjects: subjects.migration(id) });
    const iter = await consumer.consume(ONE_SHOT_CONSUME);
    try {
      for await (const m of iter) {
        const stored = decodeEvent(m, onInvalid);
        if (stored) out.push(stored);
        if (m.seq >= last) break;
      }
    } finally {
      iter.stop();
    }
    return out;
  }

  /**
   * Follows every migration's events from `fromSeq` (1: the beginning). `onEvent` runs in stream
   * order; `onCaughtUp` once the tail has reached the end of the stream as it was at start.
   */
  async tail(opts: {
    fromSeq?: number;
    filter?: string;
    onEvent: (e: StoredEvent) => Promise<void> | void;
    onCaughtUp?: () => Promise<void> | void;
    onInvalid?: (seq: number, err: unknown) => void;
  }): Promise<{ stop(): void; done: Promise<void> }> {
    const info = await this.jsm.streams.info(EVT_STREAM);
    const endSeq = info.state.last_seq;
    const consumer = await this.js.consumers.get(EVT_STREAM, {
      filter_subjects: opts.filter ?? subjects.migrationEvents,
      deliver_policy: opts.fromSeq && opts.fromSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
      ...(opts.fromSeq && opts.fromSeq > 1 ? { opt_start_seq: opts.fromSeq } : {}),
    });
    const iter = await consumer.consume(LIVE_CONSUME);
    let caughtUp = false;
    const markCaughtUp = async (): Promise<void> => {
      if (caughtUp) return;
      caughtUp = true;
      await opts.onCaughtUp?.();
    };
    const done = (async () => {
      if (endSeq < (opts.fromSeq ?? 1)) await markCaughtUp();
      for await (const m of iter) {
        const stored = decodeEvent(m, opts.onInvalid);
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
}

export function decodeEvent(m: JsMsg, onInvalid?: (seq: number, err: unknown) => void): StoredEvent | undefined {
  try {
    const event = MigrationEvent.parse(JSON.parse(decoder.decode(m.data)));
    return { event, seq: m.seq, subject: m.subject };
  } catch (err) {
    onInvalid?.(m.seq, err);
    return undefined;
  }
}
