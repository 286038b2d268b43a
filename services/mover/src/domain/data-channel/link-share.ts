/**
 * Sharing one link (this mover to one destination mover) between the migrations sending over it,
 * pure. Each chunk a migration wants to send is a request; the link grants them one at a time,
 * paced at the link's known rate by the caller. Among the requests of the highest priority
 * waiting, the one with the smallest start tag goes first (start-time fair queueing): a request
 * of `bytes` from a migration of weight w starts at max(V, F) and moves the migration's finish
 * tag F to start + bytes / w, V being the start tag of the last grant. Over any busy period each
 * migration of that priority gets bytes in proportion to its weight, whatever its chunk sizes and
 * however many requests it keeps waiting; one idle for a while comes back at V, with no credit.
 * Lower priorities wait while a higher one has requests; each priority keeps its own V.
 */

/** Default weight and priority of a migration (schemas/common.ts). */
export const DEFAULT_WEIGHT = 1;
export const DEFAULT_PRIORITY = 0;

export interface ShareRequest<T> {
  flow: string;
  bytes: number;
  value: T;
}

interface Flow {
  weight: number;
  priority: number;
  finish: number;
}

interface Waiting<T> extends ShareRequest<T> {
  start: number;
  /** Arrival order: equal tags go first come, first served. */
  seq: number;
}

export class LinkShare<T> {
  private readonly flows = new Map<string, Flow>();
  private readonly waiting: Waiting<T>[] = [];
  /** Per priority: the start tag of its last grant. */
  private readonly virtual = new Map<number, number>();
  private seq = 0;

  /** A migration's weight and priority, for its requests from now on (a change applies at once). */
  set(flow: string, weight = DEFAULT_WEIGHT, priority = DEFAULT_PRIORITY): void {
    const f = this.flows.get(flow);
    if (f === undefined) {
      this.flows.set(flow, { weight, priority, finish: 0 });
      return;
    }
    if (f.weight === weight && f.priority === priority) return;
    const moved = f.priority !== priority;
    if (moved) f.finish = 0; // it joins another class: its tags start at that class's V
    f.weight = weight;
    f.priority = priority;
    // Its waiting requests are tagged again, in order, under the new values.
    const mine = this.waiting.filter((w) => w.flow === flow);
    const first = mine[0];
    if (first === undefined) return;
    let start = Math.max(this.virtual.get(priority) ?? 0, moved ? 0 : first.start);
    for (const w of mine) {
      w.start = start;
      start += w.bytes / weight;
    }
    f.finish = start;
  }

  /** Forget a migration with nothing waiting (its last batch here ended). */
  forget(flow: string): void {
    if (!this.waiting.some((w) => w.flow === flow)) this.flows.delete(flow);
  }

  get size(): number {
    return this.waiting.length;
  }

  add(r: ShareRequest<T>): void {
    let f = this.flows.get(r.flow);
    if (f === undefined) {
      f = { weight: DEFAULT_WEIGHT, priority: DEFAULT_PRIORITY, finish: 0 };
      this.flows.set(r.flow, f);
    }
    const w: Waiting<T> = { ...r, start: 0, seq: this.seq++ };
    this.tag(w, f);
    this.waiting.push(w);
  }

  /** The request to grant next, removed from the waiting ones; undefined when none waits. */
  next(): ShareRequest<T> | undefined {
    let best: Waiting<T> | undefined;
    let bestPriority = -Infinity;
    for (const w of this.waiting) {
      const p = this.flows.get(w.flow)?.priority ?? DEFAULT_PRIORITY;
      if (
        best === undefined ||
        p > bestPriority ||
        (p === bestPriority && (w.start < best.start || (w.start === best.start && w.seq < best.seq)))
      ) {
        best = w;
        bestPriority = p;
      }
    }
    if (best === undefined) return undefined;
    this.waiting.splice(this.waiting.indexOf(best), 1);
    this.virtual.set(bestPriority, Math.max(this.virtual.get(bestPriority) ?? 0, best.start));
    return { flow: best.flow, bytes: best.bytes, value: best.value };
  }

  /** Tags `w` as the flow's newest request: it starts where the flow's previous one finished, or at V. */
  private tag(w: Waiting<T>, f: Flow): void {
    w.start = Math.max(this.virtual.get(f.priority) ?? 0, f.finish);
    f.finish = w.start + w.bytes / f.weight;
  }
}
