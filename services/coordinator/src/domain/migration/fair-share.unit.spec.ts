import { describe, expect, it } from "vitest";
import { FairShare } from "./fair-share.js";
import { dispatchWindow } from "./window.js";

const B = 8 * 1024 * 1024; // 8 MiB batches: windows of 4 per unit of weight

/**
 * A source host's work queue served first come, first served, one batch at a time, fed as the
 * dispatcher feeds it: each migration queues up to its window, in its turn. Returns the order in
 * which batches were served.
 */
function serve(flows: Array<{ id: string; weight: number }>, served: number, fair = true): string[] {
  const share = new FairShare();
  const queue: Array<{ id: string; key: string }> = [];
  const queued = new Map(flows.map((f) => [f.id, 0]));
  let n = 0;
  const dispatch = (f: { id: string; weight: number }): void => {
    share.setWaiting(f.id, true);
    while ((queued.get(f.id) ?? 0) < dispatchWindow(f.weight, B)) {
      if (fair && !share.mayQueue(f.id, B)) return;
      const key = `${f.id}.b${n++}.a0`;
      queue.push({ id: f.id, key });
      share.queued(f.id, key, B, f.weight);
      queued.set(f.id, (queued.get(f.id) ?? 0) + 1);
    }
  };
  for (const f of flows) dispatch(f); // they start one after the other
  const order: string[] = [];
  while (order.length < served) {
    const next = queue.shift()!;
    order.push(next.id);
    queued.set(next.id, (queued.get(next.id) ?? 0) - 1);
    share.ended(next.id, next.key);
    for (const f of flows) dispatch(f); // every migration tries again when the clock moves
  }
  return order;
}

/** Per migration, batches served in each stretch of `stretch` consecutive services. */
function perStretch(order: string[], stretch: number): Array<Map<string, number>> {
  const out: Array<Map<string, number>> = [];
  for (let i = 0; i + stretch <= order.length; i += stretch) {
    const m = new Map<string, number>();
    for (const id of order.slice(i, i + stretch)) m.set(id, (m.get(id) ?? 0) + 1);
    out.push(m);
  }
  return out;
}

describe("fair share of a source host's work queue", () => {
  // Ten of weight 1 (even ids) and ten of weight 3 (odd ids), the light ones started first: as
  // they happen to start, a run of one class's windows lies in the queue before the other's.
  const flows = Array.from({ length: 20 }, (_, i) => ({ id: `m${i}`, weight: i % 2 === 0 ? 1 : 3 })).sort(
    (a, b) => a.weight - b.weight,
  );
  const classes = (m: Map<string, number>): [number, number] => {
    let light = 0;
    let heavy = 0;
    for (const [id, n] of m)
      if (Number(id.slice(1)) % 2 === 0) light += n;
      else heavy += n;
    return [light, heavy];
  };

  it("serves weights 1 and 3 at 1:3 in every stretch of 40 batches, where windows alone do not", () => {
    // 40 batches: each of the ten light migrations 1, each heavy one 3.
    // Once the queue as it was first filled has gone through (the first migration found nobody
    // to take turns with and queued its whole window) and the turns settled, 200 batches in,
    // every stretch is 1:3.
    const fairly = perStretch(serve(flows, 800), 40).slice(5).map(classes);
    expect(
      fairly.every(([light, heavy]) => light === 10 && heavy === 30),
      JSON.stringify(fairly),
    ).toBe(true);
    // Without turns the queue comes round in the order it was first filled, runs of one class
    // after the other: every stretch of 40 goes to one class alone.
    const unfair = perStretch(serve(flows, 800, false), 40)
      .slice(5)
      .map(classes);
    expect(unfair.filter(([light]) => light === 0 || light === 40).length, JSON.stringify(unfair)).toBe(unfair.length);
  });

  it("lets a migration with nothing queued queue one, and one alone fill its window", () => {
    const share = new FairShare();
    share.setWaiting("a", true);
    share.setWaiting("b", true);
    expect(share.mayQueue("a", B)).toBe(true);
    share.queued("a", "a.b0.a0", B, 3);
    expect(share.mayQueue("a", B)).toBe(true); // at weight 3, a third of a batch past the clock
    share.queued("a", "a.b1.a0", B, 3);
    share.queued("a", "a.b2.a0", B, 3);
    expect(share.mayQueue("a", B)).toBe(false); // a whole batch past it while b waits: a holds back
    expect(share.mayQueue("b", B)).toBe(true);
    share.setWaiting("b", false);
    expect(share.mayQueue("a", B)).toBe(true); // alone: its window is the only bound
    // The clock moves with what ends, never back.
    expect(share.ended("a", "a.b1.a0")).toBe(true);
    expect(share.ended("a", "a.b0.a0")).toBe(false);
    share.setWaiting("b", true);
    expect(share.mayQueue("a", B)).toBe(true); // the clock is at 2/3 of a batch: a's start, 1, is less than one past
    expect(share.queuedKeys("a")).toEqual(["a.b2.a0"]);
  });
});
