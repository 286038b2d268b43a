import type { Versioned as Folded } from "#common/event-sourcing/aggregate.js";
import type { StoredEvent } from "#common/event-store.js";
import { aggregateOf } from "#common/event-store.js";
import { evolveTrusted } from "../domain/migration/producers.js";
import { initialMigration, type Migration } from "../domain/migration/state.js";

/** A migration and the stream sequence of its last folded event (the next append's expectation). */
export type Versioned = Folded<Migration>;

/**
 * The coordinator's in-memory view of every migration, fed in stream order by one tail of the
 * event stream. It may lag the stream; appends carry the folded sequence, so a lagging view only
 * costs a version conflict, never a wrong transition.
 */
export class Projection {
  private readonly aggregates = new Map<string, Versioned>();
  private readonly waiters = new Map<string, Array<{ seq: number; resolve: () => void }>>();

  /** `onIgnored` hears of each event folded out because its producer may not make it. */
  constructor(private readonly onIgnored?: (e: StoredEvent, reason: string) => void) {}

  apply(e: StoredEvent): string {
    const id = aggregateOf(e.subject);
    const current = this.get(id);
    if (e.seq <= current.seq) return id;
    const state = evolveTrusted(current.state, e);
    const ignored = state.ignored?.count ?? 0;
    if (ignored > (current.state.ignored?.count ?? 0)) this.onIgnored?.(e, state.ignored?.recent.at(-1)?.reason ?? "");
    this.aggregates.set(id, { state, seq: e.seq });
    const pending = this.waiters.get(id);
    if (pending) {
      const ready = pending.filter((w) => w.seq <= e.seq);
      for (const w of ready) w.resolve();
      this.waiters.set(
        id,
        pending.filter((w) => w.seq > e.seq),
      );
    }
    return id;
  }

  get(id: string): Versioned {
    return this.aggregates.get(id) ?? { state: initialMigration(id), seq: 0 };
  }

  ids(): string[] {
    return [...this.aggregates.keys()];
  }

  /** Resolves once the view of `id` has folded sequence `seq`; false on timeout. */
  async waitFor(id: string, seq: number, timeoutMs = 10_000): Promise<boolean> {
    if (this.get(id).seq >= seq) return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      const list = this.waiters.get(id) ?? [];
      list.push({ seq, resolve: () => (clearTimeout(timer), resolve(true)) });
      this.waiters.set(id, list);
    });
  }
}
