import {
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { connect, errors, type NatsConnection } from "@nats-io/transport-node";
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
        if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error") log.warn({ nats: s.type }, `nats ${s.type}`);
      }
    })();
  }
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  return { nc, js: jetstream(nc, { timeout: 10_000 }), jsm };
}

/**
 * A control-plane hiccup rather than a fault of the work at hand: a request timed out, the
 * connection dropped, or JetStream is electing a leader (2.9 answers "jetstream is not enabled"
 * meanwhile). Callers retry or nak; they do not record a failure against the batch.
 */
export function isTransientNatsError(err: unknown): boolean {
  return (
    err instanceof errors.TimeoutError ||
    err instanceof errors.ConnectionError ||
    err instanceof errors.RequestError ||
    err instanceof errors.NoRespondersError ||
    (err instanceof Error && err.name === "JetStreamNotEnabled") ||
    (err instanceof JetStreamApiError && (err.code === 10008 || err.status === 503))
  );
}
