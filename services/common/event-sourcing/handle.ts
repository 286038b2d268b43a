import { TooManyConflictsError, VersionConflictError } from "../errors.js";
import type { Aggregate, Versioned } from "./aggregate.js";
import type { EventStore, OnInvalid } from "./event-store.js";

/** Attempts of one command before it gives up with TooManyConflictsError (the first included). */
export const DEFAULT_MAX_ATTEMPTS = 8;

/** Where handle() gets the current state and puts the decided events. */
export interface CommandPort<S, E> {
  /**
   * The aggregate's current state and the sequence it was folded at. `afterConflict` is set when
   * an append with the previous answer was refused: the next answer must have caught up.
   */
  load(id: string, afterConflict?: VersionConflictError): Promise<Versioned<S>>;
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
  /** Called after each version conflict, before the state is read again. */
  onConflict?: (attempt: number, err: VersionConflictError) => void;
}

/** What a handled command did: the events appended (none if it decided nothing) and where. */
export interface Handled<S, E> {
  events: E[];
  /** The aggregate's sequence after the append (unchanged when nothing was appended). */
  seq: number;
  /** The state with the appended events folded in. */
  state: S;
}

/**
 * Runs one command: read and fold, decide, append with the folded sequence; on a version
 * conflict read again and decide again, at most `maxAttempts` times. Any other error, thrown by
 * decide or by the append, ends the command at once.
 */
export async function handle<S, E, C, Ctx>(
  aggregate: Pick<Aggregate<S, E, C, Ctx>, "evolve" | "decide">,
  port: CommandPort<S, E>,
  cmd: Command<C, Ctx>,
  opts: HandleOptions = {},
): Promise<Handled<S, E>> {
  const maxAttempts = opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  let conflict: VersionConflictError | undefined;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    const { state, seq } = await port.load(cmd.id, conflict);
    const events = aggregate.decide(state, cmd.command, cmd.context());
    if (events.length === 0) return { events, seq, state };
    try {
      const last = await port.append(cmd.id, events, cmd.msgIdBase, seq);
      return { events, seq: last, state: events.reduce((s, e) => aggregate.evolve(s, e), state) };
    } catch (err) {
      if (!(err instanceof VersionConflictError)) throw err;
      conflict = err;
      opts.onConflict?.(attempt, err);
    }
  }
  throw new TooManyConflictsError(cmd.id, maxAttempts, { cause: conflict });
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
