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
import { FairShare } from "../domain/migration/fair-share.js";

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
  /** Per source host: the order its migrations queue batches in (domain/migration/fair-share.ts). */
  private readonly fair = new Map<string, FairShare>();
  /** Per source host: migrations that held a batch back for their turn, to dispatch again. */
  private readonly held = new Map<string, Set<string>>();

  constructor(
    private readonly nats: Nats,
    private readonly log: Logger,
    private readonly ensureHost: (host: string) => Promise<void>,
    /** The msgID published for a dedup base (keyed by the coordinator's key, so nobody squats it). */
    private readonly msgId: (base: string) => string = (base) => base,
    /** Asks for a migration to be dispatched again: its turn to queue a batch may have come. */
    private readonly wake: (migrationId: string) => void = () => undefined,
  ) {}

  /**
   * Publishes the pending batches that are due, as many as the migration's window leaves room
   * for (domain/migration/window.ts: batches published and not yet done, in proportion to its
   * weight) and, while other migrations of its source host have batches to queue, in its turn
   * among them (domain/migration/fair-share.ts); returns when the next one falls due (epoch ms).
   * Each batch that ends makes room and moves the turns on.
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
    const fair = this.fairOf(host);
    const weight = m.options?.weight ?? 1;
    let room = dispatchWindow(m.options?.weight, plan.chunkSizeBytes * plan.chunksPerBatch);
    // Its work items still out (pending, published as their current attempt), and batches left.
    const out = new Set<string>();
    let left = 0;
    for (const [batch, b] of m.batches.entries()) {
      if (b.status !== "pending") continue;
      const key = keyOf(batch, b.attempt);
      if (published.has(key)) out.add(key);
      else left += 1;
    }
    room -= out.size;
    // Queued batches no longer out ended (done, failed or superseded by a retry): turns move on.
    let turnsMoved = false;
    for (const key of fair.queuedKeys(m.id)) if (!out.has(key)) turnsMoved = fair.ended(m.id, key) || turnsMoved;
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
      const bytes = range.chunkCount * plan.chunkSizeBytes;
      if (!fair.mayQueue(m.id, bytes)) {
        this.heldOn(host).add(m.id);
        break;
      }
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
      fair.queued(m.id, key, bytes, weight);
      room -= 1;
      left -= 1;
      this.log.debug({ migrationId: m.id, batch, attempt: b.attempt, host }, "work item published");
    }
    turnsMoved = fair.setWaiting(m.id, left > 0) || turnsMoved;
    if (turnsMoved) this.wakeHeld(host, m.id);
    return wakeAt;
  }

  private fairOf(host: string): FairShare {
    let fair = this.fair.get(host);
    if (fair === undefined) this.fair.set(host, (fair = new FairShare()));
    return fair;
  }

  private heldOn(host: string): Set<string> {
    let held = this.held.get(host);
    if (held === undefined) this.held.set(host, (held = new Set()));
    return held;
  }

  /** The clock of `host` moved, or a migration stopped waiting: those holding back try again. */
  private wakeHeld(host: string, except?: string): void {
    const held = this.held.get(host);
    if (held === undefined) return;
    for (const id of [...held]) {
      if (id === except) continue;
      held.delete(id);
      this.wake(id);
    }
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
    for (const [host, fair] of this.fair)
      if (fair.forget(id)) {
        this.held.get(host)?.delete(id);
        this.wakeHeld(host);
      }
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
