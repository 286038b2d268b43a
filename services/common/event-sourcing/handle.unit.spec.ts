import { describe, expect, it } from "vitest";
import { TooManyConflictsError, VersionConflictError } from "../errors.js";
import type { Aggregate, Versioned } from "./aggregate.js";
import { handle, type CommandPort } from "./handle.js";

// A counter aggregate: `Add` appends one event per unit unless the total would pass the limit.
type Event = { type: "Added"; by: number };
type State = { total: number };
type Cmd = { type: "Add"; n: number; limit: number };

const counter: Aggregate<State, Event, Cmd, { now: Date }> = {
  initial: () => ({ total: 0 }),
  evolve: (s, e) => ({ total: s.total + e.by }),
  decide: (s, c) => (s.total + c.n > c.limit ? [] : [{ type: "Added", by: c.n }]),
};

/** An in-memory log with the store's concurrency rule; `racers` append before each of ours. */
function fakeStore(racers: Event[][] = []) {
  const log: Event[] = [];
  const appends: Array<{ expectedSeq: number; events: readonly Event[] }> = [];
  let loads = 0;
  const port: CommandPort<State, Event> = {
    load: (_id, _conflict) => {
      loads++;
      const state = log.reduce((s, e) => counter.evolve(s, e), counter.initial("c"));
      return Promise.resolve<Versioned<State>>({ state, seq: log.length });
    },
    append: (id, events, _msgIdBase, expectedSeq) => {
      appends.push({ expectedSeq, events });
      const racer = racers.shift();
      if (racer) log.push(...racer);
      if (expectedSeq !== log.length) return Promise.reject(new VersionConflictError(id, expectedSeq));
      log.push(...events);
      return Promise.resolve(log.length);
    },
  };
  return { port, log, appends, loads: () => loads };
}

const add = (n: number, limit = 100) => ({
  id: "c",
  command: { type: "Add" as const, n, limit },
  msgIdBase: `add-${n}`,
  context: () => ({ now: new Date(0) }),
});

describe("handle", () => {
  it("given no conflict, appends the decided events at the folded sequence", async () => {
    const s = fakeStore();
    const r = await handle(counter, s.port, add(3));
    expect(r).toEqual({ events: [{ type: "Added", by: 3 }], seq: 1, state: { total: 3 } });
    expect(s.appends).toEqual([{ expectedSeq: 0, events: [{ type: "Added", by: 3 }] }]);
  });

  it("when another writer appends first, re-reads, re-decides on the new state and appends after it", async () => {
    const s = fakeStore([[{ type: "Added", by: 5 }]]);
    const conflicts: number[] = [];
    const r = await handle(counter, s.port, add(3), { onConflict: (attempt) => conflicts.push(attempt) });
    expect(conflicts).toEqual([1]);
    expect(s.appends.map((a) => a.expectedSeq)).toEqual([0, 1]);
    expect(r.seq).toBe(2);
    expect(r.state).toEqual({ total: 8 });
  });

  it("a re-decision on the new state may decide nothing: no second append", async () => {
    const s = fakeStore([[{ type: "Added", by: 9 }]]);
    const r = await handle(counter, s.port, add(3, 10));
    expect(r.events).toEqual([]);
    expect(r.seq).toBe(1);
    expect(s.appends).toHaveLength(1);
  });

  it("gives up after maxAttempts conflicts with a retryable TooManyConflictsError", async () => {
    const racer: Event[] = [{ type: "Added", by: 1 }];
    const s = fakeStore([racer, racer, racer]);
    const err = await handle(counter, s.port, add(3), { maxAttempts: 3 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TooManyConflictsError);
    expect(err).toMatchObject({ code: "TOO_MANY_CONFLICTS", retryable: true, attempts: 3 });
    expect(s.loads()).toBe(3);
    expect(s.log).toHaveLength(3);
  });

  it("tells load that the previous answer was stale", async () => {
    const s = fakeStore([[{ type: "Added", by: 1 }]]);
    const seen: unknown[] = [];
    const port: CommandPort<State, Event> = { ...s.port, load: (id, c) => (seen.push(c), s.port.load(id, c)) };
    await handle(counter, port, add(3));
    expect(seen[0]).toBeUndefined();
    expect(seen[1]).toBeInstanceOf(VersionConflictError);
  });

  it("any other error ends the command at once", async () => {
    const s = fakeStore();
    const boom = new Error("transport");
    const port: CommandPort<State, Event> = { ...s.port, append: () => Promise.reject(boom) };
    await expect(handle(counter, port, add(3))).rejects.toBe(boom);
    expect(s.loads()).toBe(1);
  });

  it("an error thrown by decide is the command's answer, not retried", async () => {
    const s = fakeStore();
    const refusing = {
      ...counter,
      decide: () => {
        throw new TooManyConflictsError("x", 0);
      },
    };
    await expect(handle(refusing, s.port, add(3))).rejects.toBeInstanceOf(TooManyConflictsError);
    expect(s.appends).toHaveLength(0);
  });

  it("with retryOn, re-decides after an accepted failure and ends with the last failure itself", async () => {
    const s = fakeStore();
    const flaky = Object.assign(new Error("transport"), { retryable: true });
    let failures = 2;
    const port: CommandPort<State, Event> = {
      ...s.port,
      append: (...a) => (failures-- > 0 ? Promise.reject(flaky) : s.port.append(...a)),
    };
    const retryOn = (err: unknown) => (err as { retryable?: boolean }).retryable === true;
    const r = await handle(counter, port, add(3), { retryOn });
    expect(r.events).toEqual([{ type: "Added", by: 3 }]);
    expect(s.loads()).toBe(3);

    failures = 5;
    await expect(handle(counter, port, add(1), { retryOn, maxAttempts: 3 })).rejects.toBe(flaky);
  });

  it("without an evolve, answers the state the events were decided on", async () => {
    const s = fakeStore();
    const r = await handle(
      { decide: (st: State, c: Cmd) => counter.decide(st, c, { now: new Date(0) }) },
      s.port,
      add(3),
    );
    expect(r).toEqual({ events: [{ type: "Added", by: 3 }], seq: 1, state: { total: 0 } });
  });
});
