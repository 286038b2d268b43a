import { TooManyConflictsError, VersionConflictError } from "../errors.js";
import type { Aggregate, Versioned } from "./aggregate.js";
import type { EventStore, OnInvalid } from "./event-store.js";

/** Attempts of one command before it gives up with TooManyConflictsError (the first included). */
export const DEFAULT_MAX_ATTEMPTS = 8;

/** Where handle() gets the current state and puts the decided events. */
export interface CommandPort<S, E> {
  /**
   * The aggregate's current state and the sequence it was folded at. `after` is the error that
   * refused the previous attempt's append (a VersionConflictError, or whatever `retryOn` let
   * through): the next answer must have caught up.
   */
  load(id: string, after?: unknown): Promise<Versioned<S>>;
  /** Appends with `expectedSeq`; a stale one is refused with VersionConflictError. */
  append(id: string, events: readonly E[], msgIdBase: string, expectedSeq: number): Promise<number>;
}

export interface Command<C, Ctx> {
  /** The aggregate the command is for. */
  id: string;
  command: C;
  /** msgID of the appended events (see EventStore.append): derived from the command's id. */
  msgIdBase: string;
  /** The decision's context (time, policy), taken afresh for each attempt. */
  context: () => Ctx;
}

export interface HandleOptions {
  /** Attempts before TooManyConflictsError, the first included. Default 8. */
  maxAttempts?: number;
  /** Called after each refused attempt that is retried, before the state is read again. */
  onConflict?: (attempt: number, err: unknown) => void;
  /**
   * Which append failures are decided again. Default: a VersionConflictError only. A log that
   * also re-decides after a transport failure passes its retryability test.
   */
  retryOn?: (err: unknown) => boolean;
}

/** What a handled command did: the events appended (none if it decided nothing) and where. */
export interface Handled<S, E> {
  events: E[];
  /** The aggregate's sequence after the append (unchanged when nothing was appended). */
  seq: number;
  /**
   * The state with the appended events folded in; without an `evolve` (an aggregate that folds
   * in place as its port appends), the state the events were decided on.
   */
  state: S;
}

const isConflict = (err: unknown): boolean => err instanceof VersionConflictError;

/**
 * Runs one command: read and fold, decide, append with the folded sequence; on a version
 * conflict (or what `retryOn` accepts) read again and decide again, at most `maxAttempts` times.
 * Any other error, thrown by decide or by the append, ends the command at once. When every
 * attempt lost a race it ends with TooManyConflictsError; when the last one failed otherwise,
 * with that failure.
 */
export async function handle<S, E, C, Ctx>(
  aggregate: Pick<Aggregate<S, E, C, Ctx>, "decide"> & Partial<Pick<Aggregate<S, E, C, Ctx>, "evolve">>,
  port: CommandPort<S, E>,
  cmd: Command<C, Ctx>,
  opts: HandleOptions = {},
): Promise<Handled<S, E>> {
  const maxAttempts = opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  const retryOn = opts.retryOn ?? isConflict;
  let refused: unknown;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    const { state, seq } = await port.load(cmd.id, refused);
    const events = aggregate.decide(state, cmd.command, cmd.context());
    if (events.length === 0) return { events, seq, state };
    try {
      const last = await port.append(cmd.id, events, cmd.msgIdBase, seq);
      const evolve = aggregate.evolve;
      return { events, seq: last, state: evolve ? events.reduce((s, e) => evolve(s, e), state) : state };
    } catch (err) {
      if (!retryOn(err)) throw err;
      refused = err;
      opts.onConflict?.(attempt, err);
    }
  }
  if (isConflict(refused)) throw new TooManyConflictsError(cmd.id, maxAttempts, { cause: refused });
  throw refused;
}

/** The port of an aggregate that lives only in its store: each attempt reads and folds afresh. */
export function storePort<S, E>(
  store: EventStore<E>,
  aggregate: Pick<Aggregate<S, E, never, never>, "initial" | "evolve">,
  onInvalid?: OnInvalid,
): CommandPort<S, E> {
  return {
    load: (id) => store.load(aggregate, id, onInvalid),
    append: (id, events, msgIdBase, expectedSeq) => store.append(id, events, msgIdBase, expectedSeq),
  };
}
