import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { MigrationEvent } from "#schemas/index.js";
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
  release(): void;
}

interface Watch {
  refs: number;
  ended: AbortController;
  sub: Subscription;
  ready: Promise<void>;
  linger?: NodeJS.Timeout;
}

/**
 * Whether a migration has ended, shared by every batch of it that this mover runs: one live
 * subscription to its subject (taken first) plus one read of its history, instead of a read of
 * the whole log per batch. An event published after the subscription is seen live; one
 * published before it is in the history.
 */
export class MigrationWatches {
  private readonly watches = new Map<string, Watch>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly store: EventStore,
  ) {}

  async acquire(id: string): Promise<MigrationLiveness> {
    let w = this.watches.get(id);
    if (!w) {
      const ended = new AbortController();
      const sub = this.nc.subscribe(subjects.migration(id), {
        callback: (_e, msg) => {
          const type = (safeJson(msg.data) as { type?: MigrationEvent["type"] } | undefined)?.type;
          if (!type || !TERMINAL_EVENTS.has(type)) return;
          if (fromCoordinator(provenanceOf(this.store.trust, msg.subject, msg.headers, msg.data))) ended.abort();
        },
      });
      const ready = this.store.read(id).then((history) => {
        if (history.some((e) => TERMINAL_EVENTS.has(e.event.type) && fromCoordinator(e.provenance))) ended.abort();
      });
      w = { refs: 0, ended, sub, ready };
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
    return { signal: watch.ended.signal, release: () => this.release(id, watch) };
  }

  close(): void {
    for (const [id, w] of this.watches) this.drop(id, w);
  }

  private release(id: string, w: Watch): void {
    w.refs--;
    if (w.refs > 0) return;
    w.linger = setTimeout(() => this.drop(id, w), w.ended.signal.aborted ? 0 : LINGER_MS);
    w.linger.unref();
  }

  private drop(id: string, w: Watch): void {
    clearTimeout(w.linger);
    w.sub.unsubscribe();
    if (this.watches.get(id) === w) this.watches.delete(id);
  }
}
