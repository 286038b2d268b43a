import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import { retryTransient } from "./nats.js";
import { isStreamNotFound } from "./event-sourcing/jetstream-errors.js";
import { processSetting } from "./config.js";
import { DwcpError } from "./errors.js";

/** Every subject and stream name dwcp uses, in one place (the README's table mirrors this). */
export const CMD_STREAM = "DWCP_CMD";
export const EVT_STREAM = "DWCP_EVT";
export const SUMMARY_STREAM = "DWCP_SUMMARY";
export const MOVERS_BUCKET = "dwcp_movers";
export const COORDINATOR_DURABLE = "coordinator";
export const MOVER_DURABLE = "mover";

export const subjects = {
  commands: "dwcp.cmd.>",
  startMigration: "dwcp.cmd.migration.start",
  cancelMigration: "dwcp.cmd.migration.cancel",
  setMigrationOptions: "dwcp.cmd.migration.set",
  events: "dwcp.evt.>",
  migrationEvents: "dwcp.evt.migration.>",
  migration: (id: string): string => `dwcp.evt.migration.${id}`,
  work: (host: string): string => `dwcp.work.${host}`,
  moverRpc: (host: string): string => `dwcp.mover.${host}.rpc`,
  /** Live-migration requests from a source mover to the destination mover `host`. */
  moverLive: (host: string): string => `dwcp.mover.${host}.live`,
  summaries: "dwcp.summary.>",
  summaryPages: "dwcp.summary.page.>",
  summaryPage: (n: number): string => `dwcp.summary.page.${n}`,
  /** Core NATS, not stored: the sending movers' BatchProgress of one migration. */
  progress: (id: string): string => `dwcp.progress.${id}`,
  progressAll: "dwcp.progress.>",
} as const;

export const workStream = (host: string): string => `DWCP_WORK_${host}`;

export interface LayoutOptions {
  /** Stream replicas: 1 standalone, 3 in a cluster. */
  replicas: number;
  /**
   * Cap on DWCP_EVT's stored bytes; once reached, appends are refused (discard new), never old
   * events dropped. Default: none, since the event log is the record of every migration.
   */
  eventLogMaxBytes?: number;
}

/**
 * Size limits of dwcp's streams, enforced by the server: no message larger than its stream's
 * max_msg_size is stored, whoever publishes it.
 * - Commands: a StartMigration of 64 volumes with long paths fits in 256 KiB; the stream keeps
 *   at most 256 MiB of them (oldest dropped first; commands are consumed within seconds).
 * - Events: 1 MiB (the server's default max_payload), the largest plan of a sparse volume fits.
 * - Work items: a TransferBatch is a few hundred bytes; 64 KiB each, 64 MiB per host's queue.
 * - Summary pages: 256 summaries of at most ~3 KiB each fit 1 MiB.
 */
export const STREAM_LIMITS = {
  commandMaxMsgBytes: 256 * 1024,
  commandMaxBytes: 256 * 1024 * 1024,
  eventMaxMsgBytes: 1024 * 1024,
  workMaxMsgBytes: 64 * 1024,
  workMaxBytes: 64 * 1024 * 1024,
  summaryMaxMsgBytes: 1024 * 1024,
} as const;

/**
 * How long a mover may hold a work item without a heartbeat before JetStream hands it to another
 * mover. 30 s by default; DWCP_ACK_WAIT_MS shortens it (the chaos suite does, to see redelivery).
 */
export const workAckWaitMs = (): number => processSetting("ackWaitMs");

const MINUTE_NS = nanos(60_000);

/**
 * Creates the command and event streams and the mover registry; safe to run any number of times.
 * A service starting while its cluster elects leaders or recovers from a restart gets transient
 * errors here: they are retried for up to 30 s rather than ending the process.
 */
export async function ensureLayout(nc: NatsConnection, jsm: JetStreamManager, opts: LayoutOptions): Promise<KV> {
  return retryTransient(() => createLayout(nc, jsm, opts));
}

async function createLayout(nc: NatsConnection, jsm: JetStreamManager, opts: LayoutOptions): Promise<KV> {
  await ensureStream(jsm, {
    name: CMD_STREAM,
    subjects: [subjects.commands],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    num_replicas: opts.replicas,
    duplicate_window: 10 * MINUTE_NS,
    max_age: 7 * 24 * 60 * MINUTE_NS,
    max_msg_size: STREAM_LIMITS.commandMaxMsgBytes,
    max_bytes: STREAM_LIMITS.commandMaxBytes,
  });
  await ensureStream(jsm, {
    name: EVT_STREAM,
    subjects: [subjects.events],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    num_replicas: opts.replicas,
    allow_direct: true,
    duplicate_window: 10 * MINUTE_NS,
    max_msg_size: STREAM_LIMITS.eventMaxMsgBytes,
    ...(opts.eventLogMaxBytes !== undefined ? { max_bytes: opts.eventLogMaxBytes, discard: DiscardPolicy.New } : {}),
  });
  // The coordinator's summaries of the migrations, in pages, the last of each page kept: `dwcp
  // status` reads a page per 256 migrations instead of folding every event.
  await ensureStream(jsm, {
    name: SUMMARY_STREAM,
    subjects: [subjects.summaries],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    num_replicas: opts.replicas,
    allow_direct: true,
    max_msgs_per_subject: 1,
    duplicate_window: 2 * MINUTE_NS,
    max_msg_size: STREAM_LIMITS.summaryMaxMsgBytes,
  });
  await ensureConsumer(jsm, CMD_STREAM, COORDINATOR_DURABLE, subjects.commands, 30_000);
  return new Kvm(nc).create(MOVERS_BUCKET, { history: 1, replicas: opts.replicas });
}

/**
 * A stream or the registry a service needs is not there. Services do not create the layout (their
 * NATS users may not): admin provisions it first, as `dwcp up` and `dwcp init` do.
 */
export class LayoutMissingError extends DwcpError {
  readonly code = "LAYOUT_MISSING";
  readonly retryable = false;
  constructor(readonly stream: string) {
    super(
      `stream ${stream} does not exist: provision the layout as admin first ` +
        "(`dwcp init --hosts H,...` with the admin credentials; `dwcp up` does it)",
    );
  }
}

/** The streams every service needs: commands, events and the mover registry's. */
export const CORE_STREAMS: readonly string[] = [CMD_STREAM, EVT_STREAM, `KV_${MOVERS_BUCKET}`];

/**
 * Checks that `streams` exist (STREAM.INFO only: a service's permissions allow no more), through
 * transient errors of a cluster electing leaders; a missing one is a LayoutMissingError.
 */
export async function checkLayout(jsm: JetStreamManager, streams: readonly string[]): Promise<void> {
  for (const stream of streams) {
    await retryTransient(async () => {
      try {
        await jsm.streams.info(stream);
      } catch (err) {
        if (isStreamNotFound(err)) throw new LayoutMissingError(stream);
        throw err;
      }
    });
  }
}

/** Checks the core layout and opens the mover registry (without creating it). */
export async function openLayout(nc: NatsConnection, jsm: JetStreamManager): Promise<KV> {
  await checkLayout(jsm, CORE_STREAMS);
  return retryTransient(() => new Kvm(nc).open(MOVERS_BUCKET));
}

/** The per-host work queue: one durable consumer that every mover process of that host shares. */
export async function ensureWorkStream(jsm: JetStreamManager, host: string, opts: LayoutOptions): Promise<void> {
  await retryTransient(() => createWorkStream(jsm, host, opts));
}

async function createWorkStream(jsm: JetStreamManager, host: string, opts: LayoutOptions): Promise<void> {
  await ensureStream(jsm, {
    name: workStream(host),
    subjects: [subjects.work(host)],
    storage: StorageType.File,
    retention: RetentionPolicy.Workqueue,
    discard: DiscardPolicy.Old,
    num_replicas: opts.replicas,
    duplicate_window: 60 * MINUTE_NS,
    max_msg_size: STREAM_LIMITS.workMaxMsgBytes,
    max_bytes: STREAM_LIMITS.workMaxBytes,
  });
  await ensureConsumer(jsm, workStream(host), MOVER_DURABLE, subjects.work(host), workAckWaitMs());
}

/** Creates a stream, or brings an existing one to this configuration. */
export async function ensureStream(
  jsm: JetStreamManager,
  cfg: Partial<StreamConfig> & { name: string },
): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    await jsm.streams.update(cfg.name, cfg);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    await jsm.streams.add(cfg);
  }
}

/**
 * Durable pull consumers. A bounded max_deliver keeps a poison message from cycling forever;
 * the max-deliveries advisory tells the coordinator when one gives up.
 */
async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  filter: string,
  ackWaitMs: number,
): Promise<void> {
  const cfg = {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: filter,
    ack_wait: nanos(ackWaitMs),
    max_deliver: 8,
    max_ack_pending: 256,
  };
  try {
    await jsm.consumers.info(stream, durable);
    await jsm.consumers.update(stream, durable, {
      ack_wait: cfg.ack_wait,
      max_deliver: cfg.max_deliver,
      max_ack_pending: cfg.max_ack_pending,
    });
  } catch (err) {
    if (!(err instanceof JetStreamApiError) || err.code !== 10014) throw err;
    await jsm.consumers.add(stream, cfg);
  }
}
