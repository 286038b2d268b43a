import {
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { MigrationEvent } from "../../schemas/index.js";
import { VersionConflictError } from "./errors.js";
import { EVT_STREAM, subjects } from "./layout.js";

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
const decoder = new TextDecoder();

/** The migration id a subject dwcp.evt.migration.<id> belongs to. */
export const aggregateOf = (subject: string): string => subject.slice(subject.lastIndexOf(".") + 1);

/**
 * Events live on one subject per migration in DWCP_EVT. Appends carry a msgID (dedup) and the
 * expected last sequence of the subject (optimistic concurrency); an event counts as written only
 * once JetStream acknowledged it.
 */
export class EventStore {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {}

  /**
   * Appends events in order. `expectedSeq` is the aggregate's last sequence as the caller folded
   * it (0: no events yet); undefined appends without a check (facts reported by movers).
   * Returns the sequence of the last event written.
   */
  async append(id: string, events: MigrationEvent[], msgIdBase: string, expectedSeq?: number): Promise<number> {
    const subject = subjects.migration(id);
    let seq = expectedSeq ?? 0;
    for (const [i, event] of events.entries()) {
      const expect = expectedSeq === undefined ? undefined : { lastSubjectSequence: seq };
      try {
        const ack = await this.js.publish(subject, encoder.encode(JSON.stringify(event)), {
          msgID: events.length === 1 ? msgIdBase : `${msgIdBase}.${i}`,
          expect,
          timeout: 10_000,
        });
        seq = ack.seq;
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === 10071) throw new VersionConflictError(subject, seq, { cause: err });
        throw err;
      }
    }
    return seq;
  }

  /** The sequence of the aggregate's last event, read from the stream leader (0 if none). */
  async lastSeq(id: string): Promise<number> {
    try {
      const m = await this.jsm.streams.getMessage(EVT_STREAM, { last_by_subj: subjects.migration(id) });
      return m?.seq ?? 0;
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === 10037) return 0;
      throw err;
    }
  }

  /** All events of one migration, in order; a malformed stored event is reported, not folded. */
  async read(id: string, onInvalid?: (seq: number, err: unknown) => void): Promise<StoredEvent[]> {
    const last = await this.lastSeq(id);
    if (last === 0) return [];
    const out: StoredEvent[] = [];
    const consumer = await this.js.consumers.get(EVT_STREAM, { filter_subjects: subjects.migration(id) });
    const iter = await consumer.consume();
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
