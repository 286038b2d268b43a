import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamManager } from "@nats-io/jetstream";
import { capabilities } from "#native/index.js";
import type { Lifecycle } from "../lifecycle.js";
import type { Logger } from "../logger.js";
import type { MetricsSettings } from "./config.js";
import { initMetrics, metrics, setLifecycle } from "./registry.js";
import { startMetricsServer, type ReadinessCheck } from "./server.js";

/** How often JetStream state (consumers, stream leaders) and root free space are polled. */
export const POLL_INTERVAL_MS = 5_000;

export interface ObserveOptions {
  settings: MetricsSettings | undefined;
  log: Logger;
  labels: { svc: string; host?: string };
  /** The durable consumers this service pulls from: their backlog becomes gauges and a readiness check. */
  consumers?: ReadonlyArray<{ stream: string; consumer: string }>;
  /** Streams whose leader is watched (and whose presence /readyz checks). */
  streams?: readonly string[];
  /** Further readiness checks (a data port listening, a lease held). */
  checks?: Record<string, ReadinessCheck>;
  /** Further polling on the same interval (free space of roots). */
  poll?: () => Promise<void>;
  /** Whether the service uses NATS (its connection is then a readiness check). Default true. */
  nats?: boolean;
}

/** A service's observability: its listener (if configured) and what it watches. */
export interface Observability {
  /** HOST:PORT of /metrics, /healthz and /readyz; undefined without --metrics-listen. */
  address: string | undefined;
  /** For runService's onState. */
  onState: (this: void, state: Lifecycle) => void;
  /** Watches the service's NATS connection (connected gauge and readiness) and JetStream state. */
  attach(nc: NatsConnection, jsm: JetStreamManager): void;
  close(): Promise<void>;
}

/**
 * Starts a service's metrics and health listener (when `settings` says where) before the
 * service itself, so that /healthz reports `starting` and /readyz names what is missing while it
 * connects. Without settings nothing listens and nothing is polled; counters still count.
 */
export async function startObservability(o: ObserveOptions): Promise<Observability> {
  initMetrics(o.labels);
  setLifecycle("starting");
  for (const [kernel, path] of Object.entries(capabilities())) metrics.nativePath.set({ kernel, path }, 1);
  let connected = false;
  let jetstream: string | true = "not connected to NATS yet";
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const natsChecks: Record<string, ReadinessCheck> = {
    nats: () => (connected ? true : "not connected to NATS"),
    jetstream: () => (connected ? jetstream : "not connected to NATS"),
  };
  const checks = { ...(o.nats === false ? {} : natsChecks), ...o.checks };
  const server =
    o.settings === undefined ? undefined : await startMetricsServer({ settings: o.settings, log: o.log, checks });
  const leaders = new Map<string, string | undefined>();

  const pollOnce = async (jsm: JetStreamManager): Promise<void> => {
    const problems: string[] = [];
    for (const { stream, consumer } of o.consumers ?? []) {
      try {
        const info = await jsm.consumers.info(stream, consumer);
        const labels = { stream, consumer };
        metrics.consumerPending.set(labels, info.num_pending);
        metrics.consumerAckPending.set(labels, info.num_ack_pending);
        metrics.consumerRedelivered.set(labels, info.num_redelivered);
      } catch (err) {
        problems.push(`consumer ${consumer} on ${stream}: ${brief(err)}`);
      }
    }
    for (const stream of o.streams ?? []) {
      try {
        const info = await jsm.streams.info(stream);
        const leader = info.cluster?.leader;
        metrics.streamLeader.set({ stream }, leader ? 1 : 0);
        if (leaders.has(stream) && leaders.get(stream) !== leader) metrics.leaderChanges.inc({ stream });
        leaders.set(stream, leader);
      } catch (err) {
        metrics.streamLeader.set({ stream }, 0);
        problems.push(`stream ${stream}: ${brief(err)}`);
      }
    }
    jetstream = problems.length === 0 ? true : problems.join("; ");
  };
  const schedule = (jsm: JetStreamManager | undefined): void => {
    if (closed || server === undefined) return;
    timer = setTimeout(() => {
      void Promise.allSettled([jsm ? pollOnce(jsm) : undefined, o.poll?.()]).then(() => schedule(jsm));
    }, POLL_INTERVAL_MS);
    timer.unref();
  };

  return {
    address: server?.address,
    onState: (state) => setLifecycle(state),
    attach(nc, jsm) {
      connected = !nc.isClosed();
      metrics.natsConnected.set(connected ? 1 : 0);
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === "disconnect") connected = false;
          else if (s.type === "reconnect") {
            connected = true;
            // Readiness follows the server's return at once, not one poll later.
            if (server !== undefined) void pollOnce(jsm).catch(() => undefined);
          }
          metrics.natsConnected.set(connected ? 1 : 0);
        }
      })();
      void nc.closed().then(() => {
        connected = false;
        metrics.natsConnected.set(0);
      });
      if (server === undefined) return;
      clearTimeout(timer);
      void Promise.allSettled([pollOnce(jsm), o.poll?.()]).then(() => schedule(jsm));
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      await server?.close();
    },
  };
}

/** An error in a few words for /readyz (a JetStream error's message names no secret or path). */
const brief = (err: unknown): string => ((err as Error)?.message ?? String(err)).slice(0, 120);
