import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { appendHooks } from "./hooks.js";

/**
 * The process's Prometheus metrics: one registry per process, instruments defined here once and
 * incremented at the edges (infra/ and app/ code, never domain/). Counting costs a few
 * nanoseconds whether or not anything scrapes; the text is rendered only on a scrape.
 *
 * Labels stay bounded: a service's `svc` and `host` are default labels set at start-up, codes
 * come from closed enums, and the only per-migration or per-VM series are for running
 * migrations and replicated VMs (removed when they end). No label or value carries a path, a
 * secret or a peer address.
 */
export const registry = new Registry();

/** Latency buckets from 1 ms to ~30 s. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Longer operations (a batch, a sync): 10 ms to ~20 min. */
const LONG_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200];

const registers = [registry];

export const metrics = {
  // Data path, source side (the mover that reads and sends).
  bytesRead: new Counter({
    name: "dwcp_bytes_read_total",
    help: "Logical bytes of batches read from source volumes (zero chunks included)",
    registers,
  }),
  bytesWire: new Counter({
    name: "dwcp_bytes_sent_wire_total",
    help: "Bytes written to data-channel sockets (frames, resends and handshakes included; after compression)",
    registers,
  }),
  bytesPayload: new Counter({
    name: "dwcp_bytes_sent_payload_total",
    help: "Bytes of non-zero chunks sent, before compression",
    registers,
  }),
  bytesBaseReused: new Counter({
    name: "dwcp_bytes_base_reused_total",
    help: "Bytes of non-zero chunks not sent: an incremental migration's destination took them from its base",
    registers,
  }),
  bytesZero: new Counter({
    name: "dwcp_bytes_skipped_zero_total",
    help: "Bytes of all-zero chunks that crossed the wire as a header only",
    registers,
  }),
  batchSend: new Histogram({
    name: "dwcp_batch_send_seconds",
    help: "Source side: one batch from first read to the destination's BATCH_OK (write, fsync included)",
    buckets: LONG_BUCKETS,
    registers,
  }),
  batchFailures: new Counter({
    name: "dwcp_batch_failures_total",
    help: "Batch attempts that failed, by failure code (the coordinator retries them up to its attempt limit)",
    labelNames: ["code"],
    registers,
  }),
  fenced: new Counter({
    name: "dwcp_fenced_sessions_total",
    help: "Batch deliveries that a newer holder fenced off",
    registers,
  }),
  // Data path, destination side.
  bytesWritten: new Counter({
    name: "dwcp_bytes_written_total",
    help: "Bytes of chunks written to destination files after their CRC32C matched",
    registers,
  }),
  bytesVerified: new Counter({
    name: "dwcp_bytes_verified_total",
    help: "Bytes read back from destination files and found equal to what was sent",
    registers,
  }),
  checksumMismatches: new Counter({
    name: "dwcp_checksum_mismatches_total",
    help: "Chunks that arrived with a CRC32C different from the sender's, and batches read back different",
    labelNames: ["stage"],
    registers,
  }),
  chunkStore: new Histogram({
    name: "dwcp_chunk_store_seconds",
    help: "Destination: one chunk's checksum and write",
    buckets: LATENCY_BUCKETS,
    registers,
  }),
  batchReceive: new Histogram({
    name: "dwcp_batch_receive_seconds",
    help: "Destination: one batch from BATCH_BEGIN to BATCH_OK (every chunk written, fsync)",
    buckets: LONG_BUCKETS,
    registers,
  }),
  dataConnections: new Counter({
    name: "dwcp_data_connections_total",
    help: "Data-channel connections accepted, by outcome: authenticated or refused before authentication",
    labelNames: ["outcome"],
    registers,
  }),
  rootFreeBytes: new Gauge({
    name: "dwcp_root_free_bytes",
    help: "Free bytes of the file system of each root, by root index (the order of --root)",
    labelNames: ["root"],
    registers,
  }),
  rootSizeBytes: new Gauge({
    name: "dwcp_root_size_bytes",
    help: "Size of the file system of each root, by root index (the order of --root)",
    labelNames: ["root"],
    registers,
  }),
  // Event log and JetStream.
  appendSeconds: new Histogram({
    name: "dwcp_event_append_seconds",
    help: "One event append, publish to PubAck, resends included",
    buckets: LATENCY_BUCKETS,
    registers,
  }),
  appendResends: new Counter({
    name: "dwcp_event_append_resends_total",
    help: "Appends sent again after a transient NATS error (a timeout, a leader election)",
    registers,
  }),
  consumerPending: new Gauge({
    name: "dwcp_consumer_num_pending",
    help: "Messages of the consumer's stream not yet delivered to it",
    labelNames: ["stream", "consumer"],
    registers,
  }),
  consumerAckPending: new Gauge({
    name: "dwcp_consumer_num_ack_pending",
    help: "Messages delivered to the consumer and not yet acknowledged",
    labelNames: ["stream", "consumer"],
    registers,
  }),
  consumerRedelivered: new Gauge({
    name: "dwcp_consumer_num_redelivered",
    help: "Messages the consumer has delivered more than once and not yet acknowledged",
    labelNames: ["stream", "consumer"],
    registers,
  }),
  streamLeader: new Gauge({
    name: "dwcp_stream_has_leader",
    help: "1 while the stream reports a leader, else 0 (no answer counts as no leader)",
    labelNames: ["stream"],
    registers,
  }),
  leaderChanges: new Counter({
    name: "dwcp_stream_leader_changes_total",
    help: "Stream leader changes this service saw while polling",
    labelNames: ["stream"],
    registers,
  }),
  natsConnected: new Gauge({
    name: "dwcp_nats_connected",
    help: "1 while the service's NATS connection is up",
    registers,
  }),
  // Migrations (the coordinator's view; see coordinator-metrics).
  migrationsEnded: new Counter({
    name: "dwcp_migrations_ended_total",
    help: "Migrations this coordinator saw end since it started, by outcome (completed, failed, cancelled, rejected)",
    labelNames: ["outcome"],
    registers,
  }),
  // Replication.
  syncSeconds: new Histogram({
    name: "dwcp_replication_sync_seconds",
    help: "One replication sync: scan, send, commit",
    buckets: LONG_BUCKETS,
    registers,
  }),
  syncs: new Counter({
    name: "dwcp_replication_syncs_total",
    help: "Replication syncs, by outcome (ok, failed)",
    labelNames: ["outcome"],
    registers,
  }),
  replChanged: new Counter({
    name: "dwcp_replication_changed_bytes_total",
    help: "Bytes found changed since the previous snapshot",
    registers,
  }),
  replWire: new Counter({
    name: "dwcp_replication_wire_bytes_total",
    help: "Bytes replication sent to the destination store",
    registers,
  }),
  lastSnapshot: new Gauge({
    name: "dwcp_replication_last_snapshot_timestamp_seconds",
    help: "When the newest snapshot of each VM was taken (Unix seconds); time() minus it is the live RPO",
    labelNames: ["vm"],
    registers,
  }),
  rpoTarget: new Gauge({
    name: "dwcp_replication_rpo_target_seconds",
    help: "The recovery point objective of each VM a `dwcp replicate --every` schedule keeps: its period",
    labelNames: ["vm"],
    registers,
  }),
  // Process.
  lifecycle: new Gauge({
    name: "dwcp_lifecycle_state",
    help: "1 for the service's current lifecycle state (starting, running, draining, stopped, failed)",
    labelNames: ["state"],
    registers,
  }),
  nativePath: new Gauge({
    name: "dwcp_native_path_info",
    help: "1 for each kernel's live implementation (native SIMD tier, scalar, or ts-fallback)",
    labelNames: ["kernel", "path"],
    registers,
  }),
};

let started = false;

/**
 * Sets the labels every series of this process carries (`svc`, and `host` for per-host
 * services) and starts Node's process collectors (RSS, event-loop lag, GC, handles). Once per
 * process; later calls only update the labels.
 */
export function initMetrics(labels: { svc: string; host?: string }): void {
  registry.setDefaultLabels(labels.host === undefined ? { svc: labels.svc } : { svc: labels.svc, host: labels.host });
  if (started) return;
  started = true;
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
}

const LIFECYCLE_STATES = ["starting", "running", "draining", "stopped", "failed"] as const;
type LifecycleState = (typeof LIFECYCLE_STATES)[number];
let lifecycleState: LifecycleState = "starting";

/** Marks `state` as the service's lifecycle state (one series is 1, the others 0); /healthz reports it. */
export function setLifecycle(state: LifecycleState): void {
  lifecycleState = state;
  for (const s of LIFECYCLE_STATES) metrics.lifecycle.set({ state: s }, s === state ? 1 : 0);
}

/** The state setLifecycle last set ("starting" before any). */
export const currentLifecycle = (): LifecycleState => lifecycleState;

export { secondsSince } from "./hooks.js";

appendHooks.observe = (seconds, resends) => {
  metrics.appendSeconds.observe(seconds);
  if (resends > 0) metrics.appendResends.inc(resends);
};

/**
 * A gauge whose series are read from `read` at each scrape (a view the service already keeps,
 * e.g. the coordinator's migrations): nothing to update on the hot path. Defining it again (a
 * second service in one process, as in tests) replaces the earlier reader.
 */
export function gaugeFrom(
  o: { name: string; help: string; labelNames: readonly string[] },
  read: () => Iterable<[Record<string, string>, number]>,
): void {
  if (registry.getSingleMetric(o.name) !== undefined) registry.removeSingleMetric(o.name);
  new Gauge({
    name: o.name,
    help: o.help,
    labelNames: o.labelNames,
    registers,
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.set(labels, value);
    },
  });
}
