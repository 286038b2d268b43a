import type { JsMsg } from "@nats-io/jetstream";
import { FailureCode, TransferBatch, type MigrationEvent } from "#schemas/index.js";
import { errorCode, isRetryable } from "#common/errors.js";
import type { EventStore } from "#common/event-store.js";
import { workAckWaitMs } from "#common/layout.js";
import { safeJson } from "#common/json.js";
import type { Logger } from "#common/logger.js";
import { ackConfirmed, isTransientNatsError, type Nats } from "#common/nats.js";
import { DestinationUnreachableError } from "../errors.js";
import {
  sendBatch,
  setMigrationLimit,
  setMigrationShare,
  type SendBatchOptions,
  type SendBatchResult,
} from "../infra/data-channel/client.js";
import { FencedError } from "../infra/data-channel/fenced.js";
import type { MoverConfig } from "../config.js";
import type { Registry } from "../infra/registry.js";
import { LiveWorker } from "./live-work.js";
import { MigrationWatches } from "./migration-watch.js";
import { confine } from "../infra/volumes.js";
import { BatchProgressReporter } from "./progress.js";
import { observeBatchFailed, observeBatchSent, observeFenced } from "../infra/batch-metrics.js";

/**
 * This process's own data server: a batch whose destination is registered at `address` (this
 * very mover: source and destination on one host) is copied by `copy` without a socket.
 */
export interface LocalDestination {
  address: string;
  copy(o: SendBatchOptions): Promise<SendBatchResult>;
}

/** Tell JetStream we are still working well inside the ack wait. */
const HEARTBEAT_MS = Math.min(5_000, Math.max(100, Math.floor(workAckWaitMs() / 3)));

/**
 * Moves one work item: checks the migration is still live, streams the batch to the destination
 * mover (which writes, verifies and fsyncs it), then records ChunkBatchTransferred and only then
 * acks. A failure becomes ChunkBatchFailed and the item is acked too (retrying is the
 * coordinator's decision; on 2.9 a terminated item would stay in the work queue forever). If even
 * that event cannot be written, the item is naked and comes back. A sender that the destination
 * fenced (a newer holder took the batch) lets the item go without a word.
 */
export class BatchWorker {
  private readonly watches: MigrationWatches;
  private readonly live: LiveWorker;

  constructor(
    private readonly nats: Nats,
    private readonly store: EventStore,
    private readonly registry: Registry,
    private readonly config: MoverConfig,
    private readonly log: Logger,
    private readonly local?: LocalDestination,
  ) {
    // Options the coordinator changes mid-migration reach the batches sending now at once.
    this.watches = new MigrationWatches(nats.nc, store, (id, change) => {
      this.log.info(
        {
          migrationId: id,
          bandwidthLimitBytesPerSec: change.bytesPerSec ?? null,
          weight: change.weight ?? null,
          priority: change.priority ?? null,
        },
        "migration options changed",
      );
      setMigrationLimit(id, change.bytesPerSec);
      setMigrationShare(id, change.weight, change.priority);
    });
    this.live = new LiveWorker(nats, store, registry, config, this.watches, log);
  }

  close(): void {
    this.watches.close();
  }

  /**
   * Moves one work item. `onSent`: called when a data batch has handed its last chunk to the
   * kernel and only waits for the destination's acknowledgements (not for live migrations or an
   * in-process copy; see SendBatchOptions.onSent).
   */
  async handle(m: JsMsg, onSent?: () => void): Promise<void> {
    const data = safeJson(m.data);
    if ((data as { type?: unknown } | undefined)?.type === "LiveMigrate")
      return this.live.handle(m, data, HEARTBEAT_MS);
    const parsed = TransferBatch.safeParse(data);
    if (!parsed.success) {
      this.log.error(
        { streamSeq: m.seq, issues: parsed.error.issues.slice(0, 5) },
        "work item failed validation; dropped",
      );
      await this.ack(m, this.log);
      return;
    }
    const w = parsed.data;
    const offset = w.firstChunk * w.chunkSizeBytes;
    const log = this.log.child({
      migrationId: w.migrationId,
      batch: w.batch,
      attempt: w.attempt,
      offset,
      volume: w.volume.index,
    });
    const heartbeat = setInterval(() => m.working(), HEARTBEAT_MS);
    try {
      const live = await this.watches.acquire(w.migrationId);
      try {
        if (live.signal.aborted) {
          log.info("migration already ended; dropping its work item");
          await this.ack(m, log);
          return;
        }
        // The coordinator may have changed the options after handing out this item.
        const limit = live.limit();
        await this.move(
          limit === undefined
            ? w
            : { ...w, bandwidthLimitBytesPerSec: limit.bytesPerSec, weight: limit.weight, priority: limit.priority },
          m,
          live.signal,
          log,
          onSent,
        );
      } finally {
        live.release();
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async move(
    w: TransferBatch,
    m: JsMsg,
    signal: AbortSignal,
    log: Logger,
    onSent: (() => void) | undefined,
  ): Promise<void> {
    const base = {
      migrationId: w.migrationId,
      version: 1 as const,
      batch: w.batch,
      attempt: w.attempt,
      host: this.config.host,
    };
    const msgId = `${w.migrationId}.b${w.batch}.a${w.attempt}`;
    const progress = new BatchProgressReporter(this.nats.nc, this.store.trust, base);
    try {
      const reg = await this.registry.lookup(w.destHost);
      if (!reg) throw new DestinationUnreachableError(`no mover has registered host "${w.destHost}"`);
      const options: SendBatchOptions = {
        address: reg.dataAddress,
        secret: Buffer.from(this.config.secret),
        // The destination must prove it is the host the coordinator named, not whoever the registry points at.
        ...(this.config.link.mode === "tls" ? { tls: { tls: this.config.link.tls, destHost: w.destHost } } : {}),
        sourceHost: this.config.host,
        migrationId: w.migrationId,
        batch: w.batch,
        attempt: w.attempt,
        // With the attempt, the fencing token: a redelivery of this item outranks this delivery.
        delivery: m.info.deliveryCount,
        sourcePath: await confine(this.registry.roots, w.volume.sourcePath, { mustExist: true }),
        sourceRoots: this.registry.roots,
        destDir: w.destDir,
        destName: w.volume.destName,
        volumeSizeBytes: w.volume.sizeBytes,
        chunkSizeBytes: w.chunkSizeBytes,
        firstChunk: w.firstChunk,
        chunkCount: w.chunkCount,
        bandwidthLimitBytesPerSec: w.bandwidthLimitBytesPerSec,
        linkRateBytesPerSec: this.config.linkRateBytesPerSec,
        weight: w.weight,
        priority: w.priority,
        streams: w.streams,
        compression: w.compression,
        verify: w.verify,
        incremental: w.incremental === true,
        resumeWindowMs: this.config.resumeWindowMs,
        signal,
        log,
        onChunk: progress.onChunk,
        ...(onSent === undefined ? {} : { onSent }),
      };
      // The registry names the process whose fence table guards the destination: only when that
      // is this process may the batch skip the socket (DWCP_LOCAL_COPY=off never does).
      const local = reg.dataAddress === this.local?.address && this.config.localCopy ? this.local : undefined;
      const result = local !== undefined ? await local.copy(options) : await sendBatch(options);
      progress.stop(true);
      observeBatchSent(result);
      const event: MigrationEvent = { type: "ChunkBatchTransferred", ...base, at: new Date().toISOString(), ...result };
      const streamSeq = await this.store.append(w.migrationId, [event], `${msgId}.done`);
      log.info(
        { streamSeq, bytes: result.bytes, wireBytes: result.wireBytes, ms: Math.round(result.durationMs) },
        "batch transferred",
      );
      await this.ack(m, log);
    } catch (err) {
      progress.stop();
      if (signal.aborted) {
        log.info("migration ended while its batch was moving; stopped");
        await this.ack(m, log);
        return;
      }
      if (err instanceof FencedError) {
        // A newer holder has the batch: a later delivery of this same item (JetStream keeps one
        // pending entry per message, and an ack or nak from this stale delivery would remove or
        // requeue it under the holder's feet), or a later attempt. The holder reports it; this
        // delivery neither acks, naks nor records a failure. If nobody holds the item any more,
        // the ack wait brings it back, and max_deliver bounds that.
        observeFenced();
        log.warn(
          { code: err.code, reason: err.message, delivery: m.info.deliveryCount },
          "batch taken over by a newer holder (FENCED); leaving it to that holder",
        );
        return;
      }
      if (isTransientNatsError(err)) {
        // NATS was unreachable or electing a leader: not the batch's fault. Let it come back.
        log.warn({ err }, "NATS unavailable while moving the batch; it will be redelivered");
        m.nak(2_000);
        return;
      }
      const code = errorCode(err);
      log.warn({ err, code }, "batch failed");
      observeBatchFailed(eventCodeOf(code));
      const event: MigrationEvent = {
        type: "ChunkBatchFailed",
        ...base,
        at: new Date().toISOString(),
        code: eventCodeOf(code),
        retryable: isRetryable(err),
        message: LINK_REFUSALS.has(code)
          ? `${code}: ${(err as Error).message}`
          : ((err as Error).message ?? String(err)),
      };
      try {
        await this.store.append(w.migrationId, [event], `${msgId}.failed`);
        await this.ack(m, log);
      } catch (appendErr) {
        log.error({ err: appendErr }, "could not record the failure; the work item will be redelivered");
        m.nak(5_000);
      }
    }
  }

  /** Acks through a consumer leader election, so that a batch already recorded is not moved again. */
  private async ack(m: JsMsg, log: Logger): Promise<void> {
    if (!(await ackConfirmed(this.nats.nc, m)))
      log.warn({ streamSeq: m.seq }, "work item ack not confirmed; if it comes back, what it records is deduplicated");
  }
}

type FailureEventCode = Extract<MigrationEvent, { type: "ChunkBatchFailed" }>["code"];
const FAILURE_CODES = new Set<string>(FailureCode.options);
/** A destination refused on the TLS layer: recorded as AUTH_FAILED, the message keeps the precise code. */
const LINK_REFUSALS = new Set<string>(["TLS_HANDSHAKE_FAILED", "PEER_IDENTITY_MISMATCH"]);
const eventCodeOf = (code: string): FailureEventCode =>
  FAILURE_CODES.has(code) ? (code as FailureEventCode) : LINK_REFUSALS.has(code) ? "AUTH_FAILED" : "INTERNAL";
