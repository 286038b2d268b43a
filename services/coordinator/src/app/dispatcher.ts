import type { Msg, Subscription } from "@nats-io/transport-node";
import { z } from "zod";
import { TransferBatch } from "#schemas/index.js";
import type { EventStore } from "#common/event-store.js";
import { subjects, workStream } from "#common/layout.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import { batchRange } from "../domain/migration/planner.js";
import { isTerminal, type Migration } from "../domain/migration/state.js";
import { liveWorkId, liveWorkItem } from "../domain/migration/live.js";
import { dispatchWindow } from "../domain/migration/window.js";

const encoder = new TextEncoder();

/** The fields of a JetStream max-deliveries advisory the coordinator uses, bounded. */
const MaxDeliveriesAdvisory = z.object({
  stream: z.string().min(1).max(255),
  stream_seq: z.number().int().positive(),
  deliveries: z.number().int().nonnegative(),
});

const WORK_STREAM_PREFIX = workStream("");

/**
 * Hands out work items. The msgID `<id>.b<batch>.a<attempt>` makes a re-publish (a restarted or
 * second coordinator) a no-op within the work stream's duplicate window; past it a batch may be
 * moved twice, which is harmless because movers rewrite the same bytes.
 */
export class Dispatcher {
  /** Work items published by this process, per migration still in flight (see forget). */
  private readonly published = new Map<string, Set<string>>();
  private readonly readyHosts = new Set<string>();

  constructor(
    private readonly nats: Nats,
    private readonly log: Logger,
    private readonly ensureHost: (host: string) => Promise<void>,
    /** The msgID published for a dedup base (keyed by the coordinator's key, so nobody squats it). */
    private readonly msgId: (base: string) => string = (base) => base,
  ) {}

  /**
   * Publishes the pending batches that are due, as many as the migration's window leaves room
   * for (domain/migration/window.ts: batches published and not yet done, in proportion to its
   * weight); returns when the next one falls due (epoch ms). Each batch that ends makes room.
   */
  async dispatch(m: Migration): Promise<number | undefined> {
    const plan = m.plan;
    const req = m.request;
    if (!plan || !req || isTerminal(m)) return undefined;
    const host = req.source.host;
    if (!this.readyHosts.has(host)) {
      await this.ensureHost(host);
      this.readyHosts.add(host);
    }
    const now = Date.now();
    let wakeAt: number | undefined;
    const published = this.published.get(m.id) ?? new Set<string>();
    this.published.set(m.id, published);
    const keyOf = (batch: number, attempt: number): string => `${m.id}.b${batch}.a${attempt}`;
    let room = dispatchWindow(m.options?.weight, plan.chunkSizeBytes * plan.chunksPerBatch);
    for (const [batch, b] of m.batches.entries())
      if (b.status === "pending" && published.has(keyOf(batch, b.attempt))) room -= 1;
    for (const [batch, b] of m.batches.entries()) {
      if (room <= 0) break;
      if (b.status !== "pending") continue;
      const key = keyOf(batch, b.attempt);
      if (published.has(key)) continue;
      const due = b.notBefore ? Date.parse(b.notBefore) : now;
      if (due > now) {
        wakeAt = Math.min(wakeAt ?? due, due);
        continue;
      }
      const range = batchRange(plan, batch);
      const vol = range && plan.volumes[range.volume];
      if (!range || !vol) continue;
      const item: TransferBatch = {
        type: "TransferBatch",
        version: 1,
        migrationId: m.id,
        batch,
        attempt: b.attempt,
        sourceHost: host,
        destHost: req.destination.host,
        destDir: plan.destDir,
        volume: {
          index: vol.index,
          kind: vol.kind,
          sourcePath: vol.sourcePath,
          destName: vol.destName,
          sizeBytes: vol.sizeBytes,
        },
        chunkSizeBytes: plan.chunkSizeBytes,
        firstChunk: range.firstChunk,
        chunkCount: range.chunkCount,
        bandwidthLimitBytesPerSec: m.options?.bandwidthLimitBytesPerSec,
        ...(m.options?.weight === undefined ? {} : { weight: m.options.weight }),
        ...(m.options?.priority === undefined ? {} : { priority: m.options.priority }),
        ...(m.options?.streams === undefined ? {} : { streams: m.options.streams }),
        ...(m.options?.compression === undefined ? {} : { compression: m.options.compression }),
        verify: m.options?.verify ?? true,
        ...(m.options?.incremental === true ? { incremental: true } : {}),
      };
      await this.nats.js.publish(subjects.work(host), encoder.encode(JSON.stringify(item)), {
        msgID: this.msgId(key),
      });
      published.add(key);
      room -= 1;
      this.log.debug({ migrationId: m.id, batch, attempt: b.attempt, host }, "work item published");
    }
    return wakeAt;
  }

  /** Publishes a live migration's one work item to its source host, while it is to be handed out. */
  async dispatchLive(m: Migration): Promise<void> {
    const item = liveWorkItem(m);
    if (item === undefined) return;
    const key = liveWorkId(m.id);
    const published = this.published.get(m.id) ?? new Set<string>();
    this.published.set(m.id, published);
    if (published.has(key)) return;
    if (!this.readyHosts.has(item.sourceHost)) {
      await this.ensureHost(item.sourceHost);
      this.readyHosts.add(item.sourceHost);
    }
    await this.nats.js.publish(subjects.work(item.sourceHost), encoder.encode(JSON.stringify(item)), {
      msgID: this.msgId(key),
    });
    published.add(key);
    this.log.debug({ migrationId: m.id, host: item.sourceHost }, "live migration work item published");
  }

  /** Drops what this process remembers of an ended migration's work items. */
  forget(id: string): void {
    this.published.delete(id);
  }

  /**
   * A work item that used up max_deliver is never redelivered: turn the server's advisory into a
   * retryable batch failure (the decider then retries or fails the migration) and drop the item.
   * Only for a work stream and a message there that is a work item of that stream's host: an
   * advisory is an ordinary subject, and one naming any other message is ignored, not obeyed.
   */
  watchMaxDeliveries(store: EventStore): Subscription {
    const subject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.mover";
    return this.nats.nc.subscribe(subject, {
      queue: "dwcp-coordinators",
      callback: (_err, msg) => {
        this.onMaxDeliveries(store, msg).catch((err: unknown) =>
          this.log.warn({ err }, "max-deliveries advisory not handled"),
        );
      },
    });
  }

  private async onMaxDeliveries(store: EventStore, msg: Msg): Promise<void> {
    let parsed;
    try {
      parsed = MaxDeliveriesAdvisory.safeParse(msg.json());
    } catch {
      parsed = undefined;
    }
    if (!parsed?.success) return this.log.warn({ subject: msg.subject }, "malformed max-deliveries advisory ignored");
    const adv = parsed.data;
    const ignore = (why: string): void =>
      this.log.warn(
        { stream: adv.stream.slice(0, 64), streamSeq: adv.stream_seq },
        `max-deliveries advisory ignored: ${why}`,
      );
    if (!adv.stream.startsWith(WORK_STREAM_PREFIX)) return ignore("not a work stream");
    const host = adv.stream.slice(WORK_STREAM_PREFIX.length);
    const stored = await this.nats.jsm.streams.getMessage(adv.stream, { seq: adv.stream_seq });
    if (!stored) return;
    let item;
    try {
      item = TransferBatch.safeParse(stored.json());
    } catch {
      item = undefined;
    }
    if (!item?.success || stored.subject !== subjects.work(host) || item.data.sourceHost !== host)
      return ignore("the message it names is not a work item of that stream");
    const w = item.data;
    await store.append(
      w.migrationId,
      [
        {
          type: "ChunkBatchFailed",
          migrationId: w.migrationId,
          at: new Date().toISOString(),
          version: 1,
          batch: w.batch,
          attempt: w.attempt,
          host: w.sourceHost,
          code: "MAX_DELIVERIES",
          retryable: true,
          message: `work item delivered ${adv.deliveries} times without an answer`,
        },
      ],
      `${w.migrationId}.b${w.batch}.a${w.attempt}.maxdeliver`,
    );
    await this.nats.jsm.streams.deleteMessage(adv.stream, adv.stream_seq);
  }
}
