/**
 * An event-sourced aggregate: pure functions only. `decide` says which events a command adds to
 * a state (time and new ids arrive in `ctx`), `evolve` folds one event and never throws.
 */
export interface Aggregate<S, E, C, Ctx> {
  initial(id: string): S;
  evolve(state: S, event: E): S;
  decide(state: S, command: C, ctx: Ctx): E[];
}

/** A folded state and the stream sequence of the last event folded into it (0: none yet). */
export interface Versioned<S> {
  state: S;
  seq: number;
}

/** Folds `events` into `from` (default: the aggregate's initial state for `id`). */
export function foldWith<S, E>(
  aggregate: Pick<Aggregate<S, E, never, never>, "initial" | "evolve">,
  id: string,
  events: Iterable<E>,
  from?: S,
): S {
  let state = from ?? aggregate.initial(id);
  for (const e of events) state = aggregate.evolve(state, e);
  return state;
}
