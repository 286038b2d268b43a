/**
 * The order in which migrations sharing a source host put their batches in its work queue:
 * self-clocked weighted fair queuing over the queue's first-come, first-served order.
 *
 * The dispatch window (window.ts) bounds how many batches a migration has queued, in proportion
 * to its weight; on its own it says nothing of their order. A migration that fills its window at
 * once lies in the queue as one run of batches, and each batch that ends puts the next at the
 * queue's tail, so that run comes round again every pass through the queue: over a whole pass
 * the shares follow the weights, but within one (a minute for 20 migrations of 8 MiB batches on
 * a 200 Mbit/s link) whole stretches go to a few migrations.
 *
 * Here every queued batch gets a virtual start, its migration's previous finish (or the clock, if
 * later), and finish, its start plus its bytes over the migration's weight. The clock is the
 * finish of the last batch that ended. While other migrations of the host wait to queue batches,
 * a migration queues its next one only while that batch's start is less than one batch (of
 * weight 1) past the clock, so a weight-w migration has about w batches queued ahead of it,
 * batches enter the queue in the order of their virtual times, and the queue serves the
 * migrations interleaved, by weight.
 * A migration with nothing queued may always queue one, and one alone on its host fills its
 * window: the clock only moves when batches end, and nothing may wait on a stuck one for more than
 * that one batch each.
 */
export class FairShare {
  /** Finish time of the last batch that ended (bytes per unit of weight). */
  private clock = 0;
  private readonly flows = new Map<string, Flow>();

  /** Whether `flow` may queue its next batch of `bytes` now. */
  mayQueue(flow: string, bytes: number): boolean {
    const f = this.flow(flow);
    if (f.queued.size === 0) return true;
    for (const [id, other] of this.flows) if (id !== flow && other.waiting) return this.start(f) < this.clock + bytes;
    return true;
  }

  /** `flow` queued the batch `key` of `bytes` at weight `weight`. */
  queued(flow: string, key: string, bytes: number, weight: number): void {
    const f = this.flow(flow);
    f.finish = this.start(f) + bytes / Math.max(1, weight);
    f.queued.set(key, f.finish);
  }

  /**
   * Whether `flow` has batches left to queue: while it has, the others take turns with it.
   * Returns whether that changed.
   */
  setWaiting(flow: string, waiting: boolean): boolean {
    const f = this.flow(flow);
    if (f.waiting === waiting) return false;
    f.waiting = waiting;
    return true;
  }

  /** The keys of `flow`'s queued batches that have not ended. */
  queuedKeys(flow: string): string[] {
    return [...(this.flows.get(flow)?.queued.keys() ?? [])];
  }

  /**
   * A queued batch ended (done, failed or replaced by a retry): the clock moves to its finish,
   * never back. Returns whether it moved.
   */
  ended(flow: string, key: string): boolean {
    const f = this.flows.get(flow);
    const finish = f?.queued.get(key);
    if (f === undefined || finish === undefined) return false;
    f.queued.delete(key);
    if (finish <= this.clock) return false;
    this.clock = finish;
    return true;
  }

  /** Drops `flow`; returns whether it was known. */
  forget(flow: string): boolean {
    return this.flows.delete(flow);
  }

  private start(f: Flow): number {
    return Math.max(this.clock, f.finish);
  }

  private flow(id: string): Flow {
    let f = this.flows.get(id);
    if (f === undefined) {
      f = { finish: this.clock, waiting: false, queued: new Map() };
      this.flows.set(id, f);
    }
    return f;
  }
}

interface Flow {
  /** Finish time of its last queued batch. */
  finish: number;
  waiting: boolean;
  /** Its queued batches that have not ended, by work item key, with their finish times. */
  queued: Map<string, number>;
}
