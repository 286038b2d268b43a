import { JetStreamApiError, type PubAck } from "@nats-io/jetstream";
import {
  errors,
  headers as natsHeaders,
  nuid,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "@nats-io/transport-node";

/** How often the deadlines of publishes awaiting their PubAck are checked. */
const SWEEP_MS = 100;

interface Pending {
  deadline: number;
  resolve: (ack: PubAck) => void;
  reject: (err: unknown) => void;
}

/**
 * JetStream publishes with many PubAcks in flight on one connection, without the client's
 * per-request machinery: one subscription takes every PubAck (`<inbox>.<token>`), one timer
 * checks every deadline. The client's `js.publish` is a request each: a reply subscription entry,
 * a timer and, on 3.x, an Error built (and thrown away) for every answered request, which was a
 * tenth of a coordinator's CPU at a thousand migrations in flight. The answers are what
 * `js.publish` gives: a PubAck, a JetStreamApiError for a refusal (e.g. 10071, wrong last
 * sequence), `NoRespondersError` when no stream takes the subject (a leader election) and
 * `TimeoutError` when the PubAck does not come in time; every one of them is retried by the
 * caller the same way (event-store.ts).
 */
export class PubAckPipe {
  private readonly pending = new Map<string, Pending>();
  private readonly prefix: string;
  private sub?: Subscription;
  private sweep?: NodeJS.Timeout;
  private next = 0;

  constructor(private readonly nc: NatsConnection) {
    const inbox = (nc as NatsConnection & { options?: { inboxPrefix?: string } }).options?.inboxPrefix ?? "_INBOX";
    this.prefix = `${inbox}.${nuid.next()}`;
  }

  /** Publishes `data` on `subject` with the msgID and expectation; resolves with its PubAck. */
  publish(
    subject: string,
    data: Uint8Array,
    o: { msgID: string; expect?: { lastSubjectSequence: number }; headers?: MsgHdrs; timeout: number },
  ): Promise<PubAck> {
    this.sub ??= this.nc.subscribe(`${this.prefix}.*`, { callback: (_err, m) => this.answer(m.subject, m) });
    const h = o.headers ?? natsHeaders();
    h.set("Nats-Msg-Id", o.msgID);
    if (o.expect !== undefined) h.set("Nats-Expected-Last-Subject-Sequence", `${o.expect.lastSubjectSequence}`);
    const token = (this.next++).toString(36);
    const reply = `${this.prefix}.${token}`;
    return new Promise<PubAck>((resolve, reject) => {
      this.pending.set(token, { deadline: Date.now() + o.timeout, resolve, reject });
      if (this.sweep === undefined) {
        this.sweep = setInterval(() => this.expire(), SWEEP_MS);
        this.sweep.unref();
      }
      try {
        this.nc.publish(subject, data, { reply, headers: h });
      } catch (err) {
        this.pending.delete(token);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  /** Fails whatever still waits (the connection is going away). */
  close(): void {
    clearInterval(this.sweep);
    this.sweep = undefined;
    this.sub?.unsubscribe();
    this.sub = undefined;
    for (const p of this.pending.values()) p.reject(new errors.TimeoutError());
    this.pending.clear();
  }

  private answer(subject: string, m: { data: Uint8Array; headers?: MsgHdrs; json<T>(): T }): void {
    const token = subject.slice(this.prefix.length + 1);
    const p = this.pending.get(token);
    if (p === undefined) return; // timed out already: the caller resends with the same msgID
    this.pending.delete(token);
    if (m.data.length === 0 && m.headers?.code === 503) return p.reject(new errors.NoRespondersError(subject));
    let body: Partial<PubAck> & { error?: { code: number; err_code: number; description: string } };
    try {
      body = m.json();
    } catch (err) {
      return p.reject(err);
    }
    if (body.error) return p.reject(new JetStreamApiError(body.error));
    if (typeof body.stream !== "string" || body.stream === "" || typeof body.seq !== "number")
      return p.reject(new Error("invalid ack response"));
    p.resolve({ ...(body as PubAck), duplicate: body.duplicate ?? false });
  }

  private expire(): void {
    const now = Date.now();
    for (const [token, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(token);
      p.reject(new errors.TimeoutError());
    }
    if (this.pending.size === 0) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
  }
}
