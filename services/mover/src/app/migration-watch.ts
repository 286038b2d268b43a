import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { MigrationOptionsChanged, type MigrationEvent } from "#schemas/index.js";
import type { EventStore } from "#common/event-store.js";
import { safeJson } from "#common/json.js";
import { subjects } from "#common/layout.js";
import { provenanceOf, type Provenance } from "#common/signing.js";

const TERMINAL_EVENTS = new Set<MigrationEvent["type"]>([
  "MigrationCompleted",
  "MigrationFailed",
  "MigrationCancelled",
  "MigrationRejected",
]);
/** Only a coordinator ends a migration: a terminal event from anyone else is not obeyed. */
const fromCoordinator = (p: Provenance | undefined): boolean =>
  p?.kind === "insecure" || (p?.kind === "signed" && p.principal.role === "coordinator");

/** A watch outlives its last batch this long, so the next batch of the same migration reuses it. */
const LINGER_MS = 10_000;

export interface MigrationLiveness {
  /** Aborted when the migration ends (completed, failed, cancelled, rejected). */
  readonly signal: AbortSignal;
  /**
   * The options the coordinator last set for the migration (MigrationOptionsChanged) as far as
   * this watch has seen, over the work item's own; undefined when it has seen no change.
   */
  limit(): BandwidthChange | undefined;
  release(): void;
}

/**
 * Options set on a running migration: the limit in bytes per second (undefined: none), its weight
 * and priority on a shared link (undefined: the defaults).
 */
export interface BandwidthChange {
  bytesPerSec: number | undefined;
  weight?: number | undefined;
  priority?: number | undefined;
}

const changeOf = (e: MigrationOptionsChanged): BandwidthChange => ({
  bytesPerSec: e.bandwidthLimitBytesPerSec,
  weight: e.weight,
  priority: e.priority,
});

interface Watch {
  refs: number;
  ended: AbortController;
  ready: Promise<void>;
  linger?: NodeJS.Timeout;
  limit?: BandwidthChange;
}

/**
 * Whether a migration has ended, shared by every batch of it that this mover runs: one live
 * subscription to every migration's subject (taken before any history is read) plus, per
 * migration, a look at its history. An event published after the subscription is seen live; one
 * published before it is in the history. The history is usually one direct get: a coordinator
 * appends nothing after a terminal event, so a last event of the coordinator's says it all;
 * anything else there (a mover's late fact, another producer's junk) takes a read of the log.
 */
export class MigrationWatches {
  private readonly watches = new Map<string, Watch>();
  private sub?: Subscription;

  constructor(
    private readonly nc: NatsConnection,
    private readonly store: EventStore,
    /** Told when the coordinator changes the options of a migration this mover is moving. */
    private readonly onLimit?: (migrationId: string, change: BandwidthChange) => void,
  ) {}

  async acquire(id: string): Promise<MigrationLiveness> {
    this.sub ??= this.nc.subscribe(subjects.migrationEvents, {
      callback: (_e, msg) => {
        const ofMsg = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
        const w = this.watches.get(ofMsg);
        if (!w || w.ended.signal.aborted) return;
        const json = safeJson(msg.data) as { type?: MigrationEvent["type"] } | undefined;
        const type = json?.type;
        if (type === "MigrationOptionsChanged" && w.refs > 0) {
          const changed = MigrationOptionsChanged.safeParse(json);
          if (!changed.success) return;
          if (!fromCoordinator(provenanceOf(this.store.trust, msg.subject, msg.headers, msg.data))) return;
          w.limit = changeOf(changed.data);
          this.onLimit?.(ofMsg, w.limit);
          return;
        }
        if (!type || !TERMINAL_EVENTS.has(type)) return;
        // No batch holds a lingering watch: forget it rather than check the signature (a forged
        // event costs it nothing, the next batch reads the history again).
        if (w.refs === 0) return this.drop(ofMsg, w);
        if (fromCoordinator(provenanceOf(this.store.trust, msg.subject, msg.headers, msg.data))) w.ended.abort();
      },
    });
    let w = this.watches.get(id);
    if (!w) {
      const ended = new AbortController();
      const fresh: Watch = { refs: 0, ended, ready: Promise.resolve() };
      fresh.ready = this.history(id).then((h) => {
        if (h.ended) ended.abort();
        // A change seen live while the history was read is newer than the history's.
        fresh.limit ??= h.limit;
      });
      w = fresh;
      this.watches.set(id, w);
    }
    const watch = w;
    watch.refs++;
    clearTimeout(watch.linger);
    try {
      await watch.ready;
    } catch (err) {
      this.release(id, watch);
      this.drop(id, watch);
      throw err;
    }
    return { signal: watch.ended.signal, limit: () => watch.limit, release: () => this.release(id, watch) };
  }

  close(): void {
    for (const [id, w] of this.watches) this.drop(id, w);
    this.sub?.unsubscribe();
    this.sub = undefined;
  }

  /**
   * Whether the migration ended before the watch, and the last bandwidth limit the coordinator
   * set, when a read of the history was needed (the one-get path does not see an earlier change:
   * work items handed out after it carry the new limit themselves).
   */
  private async history(id: string): Promise<{ ended: boolean; limit?: BandwidthChange }> {
    const last = await this.store.last(id);
    if (last && fromCoordinator(last.provenance)) {
      const e = last.event;
      if (e.type === "MigrationOptionsChanged") return { ended: false, limit: changeOf(e) };
      return { ended: TERMINAL_EVENTS.has(e.type) };
    }
    const ours = (await this.store.read(id)).filter((e) => fromCoordinator(e.provenance)).map((e) => e.event);
    const change = ours.findLast((e) => e.type === "MigrationOptionsChanged");
    return {
      ended: ours.some((e) => TERMINAL_EVENTS.has(e.type)),
      ...(change === undefined ? {} : { limit: changeOf(change) }),
    };
  }

  private release(id: string, w: Watch): void {
    w.refs--;
    if (w.refs > 0) return;
    w.linger = setTimeout(() => this.drop(id, w), w.ended.signal.aborted ? 0 : LINGER_MS);
    w.linger.unref();
  }

  private drop(id: string, w: Watch): void {
    clearTimeout(w.linger);
    if (this.watches.get(id) === w) this.watches.delete(id);
  }
}
