import {
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { connect, errors, type NatsConnection } from "@nats-io/transport-node";
import { DwcpError } from "./errors.js";
import type { Logger } from "./logger.js";

export interface Nats {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

/**
 * Connects and keeps reconnecting forever: a service outlives a NATS restart or leader election.
 * `waitOnFirstConnect` lets a service start before its server is reachable.
 */
export async function connectNats(url: string, name: string, log?: Logger): Promise<Nats> {
  const nc = await connect({
    servers: url.split(","),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
    timeout: 5_000,
  });
  if (log) {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error")
          log.warn({ nats: s.type }, `nats ${s.type}`);
      }
    })();
  }
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  return { nc, js: jetstream(nc, { timeout: 10_000 }), jsm };
}

/**
 * The server still holds an earlier copy of this append (same msgID) in flight: it is neither
 * stored nor refused yet. 2.9 answers such a resend with `duplicate` and sequence 0, >= 2.10 with
 * err_code 10158. Resent until it resolves; thrown only when the append's time is up.
 */
export class AppendInFlightError extends DwcpError {
  readonly code = "APPEND_IN_FLIGHT";
  readonly retryable = true;
  constructor(
    readonly subject: string,
    readonly msgID: string,
  ) {
    super(`${subject}: an earlier copy of ${msgID} is still being stored`);
  }
}

/**
 * A control-plane hiccup rather than a fault of the work at hand: a request timed out, the
 * connection dropped, JetStream is electing a leader (2.9 answers "jetstream is not enabled"
 * meanwhile), or an earlier copy of a resent publish is still in flight (10158 on >= 2.10).
 * Callers retry or nak; they do not record a failure against the batch.
 */
export function isTransientNatsError(err: unknown): boolean {
  return (
    err instanceof errors.TimeoutError ||
    err instanceof errors.ConnectionError ||
    err instanceof errors.RequestError ||
    err instanceof errors.NoRespondersError ||
    err instanceof AppendInFlightError ||
    (err instanceof Error && err.name === "JetStreamNotEnabled") ||
    (err instanceof JetStreamApiError && (err.code === 10008 || err.code === 10158 || err.status === 503))
  );
}

/**
 * Runs `fn` again while it fails with a transient NATS error (a leader election, a server still
 * recovering its streams after a restart), for up to `forMs` (default 30000), `pauseMs` (default
 * 250) apart and never past the deadline; then the last error is thrown. Any other error is
 * thrown at once. For idempotent calls only (creating streams and consumers, a publish resent
 * with its msgID, an ack).
 */
export async function retryTransient<T>(
  fn: () => Promise<T>,
  o: { forMs?: number; pauseMs?: number } = {},
): Promise<T> {
  const deadline = performance.now() + (o.forMs ?? 30_000);
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransientNatsError(err)) throw err;
      const left = deadline - performance.now();
      if (left <= 0) throw err;
      // A timed-out try has waited already; "no responders" and "in flight" come back at once.
      await new Promise((resolve) => setTimeout(resolve, Math.min(o.pauseMs ?? 250, left)));
    }
  }
}

const ACK = new TextEncoder().encode("+ACK");

/**
 * Acks a message and waits until the consumer leader confirms it, resending the ack through
 * transient errors (a consumer leader election, a reconnect) for up to `resendForMs` (default
 * 15000). `JsMsg.ackAck` sends only once: an ack lost in an election brings the message back
 * after its ack wait, and a work item's batch would be moved again. Resolves false, and does not
 * throw, when no confirmation came; the message then comes back, so handling must be idempotent.
 */
export async function ackConfirmed(
  nc: NatsConnection,
  m: JsMsg,
  o: { resendForMs?: number; tryTimeoutMs?: number } = {},
): Promise<boolean> {
  // The message's ack subject: JsMsg's implementation has it, its interface does not say so.
  const reply = (m as JsMsg & { reply?: unknown }).reply;
  if (typeof reply !== "string" || reply === "") return false;
  try {
    await retryTransient(() => nc.request(reply, ACK, { timeout: o.tryTimeoutMs ?? 2_000 }), {
      forMs: o.resendForMs ?? 15_000,
    });
    return true;
  } catch {
    return false;
  }
}
