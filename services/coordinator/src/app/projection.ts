import type { Versioned as Folded } from "#common/event-sourcing/aggregate.js";
import type { StoredEvent } from "#common/event-store.js";
import { aggregateOf } from "#common/event-store.js";
import { evolveInvalid, evolveTrusted, type Producer } from "../domain/migration/producers.js";
import { initialMigration, isTerminal, type BatchState, type Migration } from "../domain/migration/state.js";

/** A migration and the stream sequence of its last folded event (the next append's expectation). */
export type Versioned = Folded<Migration>;

/** Told once per migration, when a bad event at stream sequence `seq` sets it aside. */
export type OnSetAside = (migrationId: string, seq: number, reason: string) => void;

/**
 * The coordinator's in-memory view of every migration, fed in stream order by one tail of the
 * event stream. It may lag the stream; appends carry the folded sequence, so a lagging view only
 * costs a version conflict, never a wrong transition. A bad event sets its migration aside (see
 * setAside) and the view goes on with every other one: one event never stops the coordinator.
 */
export class Projection {
  private readonly aggregates = new Map<string, Versioned>();
  private readonly waiters = new Map<string, Waiter[]>();
  /**
   * One timer for every waiter's deadline, not one per waiter: a coordinator with thousands of
   * decisions waiting for the tail would otherwise arm and clear a timer for each.
   */
  private sweep: NodeJS.Timeout | undefined;

  /**
   * `onIgnored` hears of each event folded out because its producer may not make it;
   * `onSetAside` of each migration a bad event sets aside.
   */
  constructor(
    private readonly onIgnored?: (e: StoredEvent, reason: string) => void,
    private readonly onSetAside: OnSetAside = () => {},
  ) {}

  apply(e: StoredEvent): string {
    const id = aggregateOf(e.subject);
    const current = this.get(id);
    if (e.seq <= current.seq) return id;
    const state = evolveTrusted(current.state, e);
    const ignored = state.ignored?.count ?? 0;
    if (ignored > (current.state.ignored?.count ?? 0)) this.onIgnored?.(e, state.ignored?.recent.at(-1)?.reason ?? "");
    this.update(id, current, state, e.seq);
    return id;
  }

  /**
   * A stored message on `subject` that failed validation: from a producer this deployment trusts
   * (or read without checking), its migration cannot be folded past it and is set aside (one
   * that already ended keeps its outcome); anyone else's junk is ignored input (evolveInvalid).
   */
  applyInvalid(subject: string, seq: number, problem: string, provenance?: Producer): string {
    const id = aggregateOf(subject);
    const current = this.get(id);
    if (seq <= current.seq) return id;
    this.update(id, current, evolveInvalid(current.state, { seq, problem, provenance }), seq);
    return id;
  }

  private update(id: string, current: Versioned, state: Migration, seq: number): void {
    this.aggregates.set(id, { state: isTerminal(state) ? compacted(state) : state, seq });
    if (state.status === "set-aside" && current.state.status !== "set-aside") {
      this.onSetAside(id, seq, state.message ?? "set aside");
    }
    const pending = this.waiters.get(id);
    if (pending) this.settle(id, pending, (w) => w.seq <= seq, true);
  }

  /** Resolves the waiters of `id` that `done` picks with `result` and keeps the rest. */
  private settle(id: string, pending: Waiter[], done: (w: Waiter) => boolean, result: boolean): void {
    const rest: Waiter[] = [];
    for (const w of pending) {
      if (done(w)) w.resolve(result);
      else rest.push(w);
    }
    if (rest.length > 0) this.waiters.set(id, rest);
    else this.waiters.delete(id);
    if (this.waiters.size === 0 && this.sweep !== undefined) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
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
      const list = this.waiters.get(id) ?? [];
      list.push({ seq, deadline: Date.now() + timeoutMs, resolve });
      this.waiters.set(id, list);
      this.sweep ??= setInterval(() => {
        const now = Date.now();
        for (const [wid, ws] of [...this.waiters]) this.settle(wid, ws, (w) => w.deadline <= now, false);
      }, SWEEP_MS);
      this.sweep.unref();
    });
  }
}

interface Waiter {
  seq: number;
  /** Epoch ms after which the wait ends unfulfilled (within SWEEP_MS). */
  deadline: number;
  resolve: (folded: boolean) => void;
}

/** How often the deadlines of waiters are checked: a wait ends at most this much after its timeout. */
const SWEEP_MS = 250;

/**
 * An ended migration without its chunks' checksums: nothing reads them once it has ended (the
 * fold ignores what comes after, finalize is done), and they are most of what a migration holds,
 * so a coordinator's memory grows with the migrations in flight rather than with its whole log.
 */
function compacted(m: Migration): Migration {
  if (!m.batches.some((b) => b.chunks !== undefined)) return m;
  return { ...m, batches: m.batches.map(({ chunks: _c, ...b }): BatchState => b) };
}
