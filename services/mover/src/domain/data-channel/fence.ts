import type { BatchBegin } from "./frames.js";

/**
 * Fencing for the destination side of the data channel. A work item can be held by two source
 * movers at once: JetStream redelivers it when the first holder missed its ack wait (paused,
 * partitioned, slow), and the first may wake up and keep writing. The destination keeps, per
 * (migration, destination file, batch), the newest fence token it has seen and the session that
 * holds it; a session with an older token is refused, and a session that is superseded stops
 * before its next write.
 *
 * The token orders holders: a higher `attempt` (a retry the coordinator decided) wins; within an
 * attempt, a higher JetStream `delivery` count wins (the redelivery is the live one). Senders
 * that do not send a delivery count compare as delivery 0, and between equal tokens the newest
 * session wins: JetStream only hands an item out again after the previous holder lost it.
 *
 * A sender that stripes one batch over several connections sends every stripe with the same
 * token and the same `stripe` id: those sessions hold the batch together (each writes only its
 * own run of chunks). A claim with an equal token and another (or no) stripe id is a new holder as
 * above. Within the group, a run's first connection claims without `resume` and each reconnection
 * with it, so a claim of a run that overlaps a holder's is that stripe on a newer connection: a
 * resume supersedes the holder (TCP may still deliver chunks on its abandoned connection, which
 * the new session's RESUME_AT must not miss). A first connection's claim that arrives after the
 * run was resumed (its BATCH_BEGIN retransmitted late on the abandoned connection) is refused.
 */
export interface FenceToken {
  attempt: number;
  delivery: number;
}

export const tokenOf = (b: Pick<BatchBegin, "attempt" | "delivery">): FenceToken => ({
  attempt: b.attempt,
  delivery: b.delivery ?? 0,
});

/** Negative if a is older than b, 0 if equal, positive if newer. */
export const compareTokens = (a: FenceToken, b: FenceToken): number => a.attempt - b.attempt || a.delivery - b.delivery;

export const fenceKey = (b: Pick<BatchBegin, "migrationId" | "destDir" | "destName" | "batch">): string =>
  JSON.stringify([b.migrationId, b.destDir, b.destName, b.batch]);

/** The chunks one stripe of a batch carries (BatchBegin's firstChunk and chunkCount), and whether it resumes. */
export interface Run {
  firstChunk: number;
  chunkCount: number;
  resume?: boolean;
}

/** Two runs share a chunk; a holder that named no run shares none. */
const overlaps = (a: Run | undefined, b: Run | undefined): boolean =>
  a !== undefined &&
  b !== undefined &&
  a.firstChunk < b.firstChunk + b.chunkCount &&
  b.firstChunk < a.firstChunk + a.chunkCount;

export type Claim<H> =
  | {
      granted: true;
      /** The live holders this claim took over from; they must stop writing. */
      superseded?: H[];
      /** They are the claimant's own stripe group: its run resumed on a new connection. */
      resumed?: true;
    }
  | {
      granted: false;
      newer: FenceToken;
      /** Refused with an equal token: the claimant's own stripe group resumed this run since. */
      resumed?: true;
    };

interface Entry<H> {
  token: FenceToken;
  /** The stripe group holding the batch (undefined: a single session). */
  stripe: string | undefined;
  /** Each live holder and the run of chunks it writes, if it named one. */
  holders: Map<H, Run | undefined>;
  /** The group's runs claimed by a reconnection (one per stripe at most). */
  resumed: Run[];
}

/**
 * In-memory table, bounded (least recently claimed keys are forgotten first). Pure: holders are
 * opaque values the caller compares by identity.
 */
export class FenceTable<H> {
  private readonly entries = new Map<string, Entry<H>>();

  /** @param maxKeys batches remembered; default 65536 (a few MiB). */
  constructor(private readonly maxKeys = 65_536) {}

  /**
   * `stripe` and `run`: the group `holder` belongs to and the chunks it writes (see above). Without
   * a run, a stripe's claim joins its group and supersedes nobody in it.
   */
  claim(key: string, token: FenceToken, holder: H, stripe?: string, run?: Run): Claim<H> {
    const current = this.entries.get(key);
    if (current !== undefined && compareTokens(token, current.token) < 0)
      return { granted: false, newer: current.token };
    const joins = current !== undefined && stripe !== undefined && current.stripe === stripe;
    if (joins && compareTokens(token, current.token) === 0) return this.join(key, current, holder, run);
    this.entries.delete(key); // re-insert: the Map's order is the eviction order
    const resumed = stripe !== undefined && run?.resume === true ? [run] : [];
    this.entries.set(key, { token, stripe, holders: new Map([[holder, run]]), resumed });
    while (this.entries.size > this.maxKeys) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
    const superseded = [...(current?.holders.keys() ?? [])].filter((h) => h !== holder);
    return superseded.length === 0 ? { granted: true } : { granted: true, superseded };
  }

  /** A claim of the stripe group holding `entry` with its token (see claim). */
  private join(key: string, entry: Entry<H>, holder: H, run: Run | undefined): Claim<H> {
    this.entries.delete(key); // re-insert: the Map's order is the eviction order
    this.entries.set(key, entry);
    if (run?.resume !== true && entry.resumed.some((r) => overlaps(r, run)))
      return { granted: false, newer: entry.token, resumed: true };
    const superseded = [...entry.holders].filter(([h, r]) => h !== holder && overlaps(r, run)).map(([h]) => h);
    for (const h of superseded) entry.holders.delete(h);
    entry.holders.set(holder, run);
    if (run?.resume === true && !entry.resumed.some((r) => r.firstChunk === run.firstChunk)) entry.resumed.push(run);
    return superseded.length === 0 ? { granted: true } : { granted: true, superseded, resumed: true };
  }

  /** Whether `holder` still holds `key` (nobody newer claimed it). */
  holds(key: string, holder: H): boolean {
    return this.entries.get(key)?.holders.has(holder) === true;
  }

  /** The holder is done with the key; its token stays, so older senders are still refused. */
  release(key: string, holder: H): void {
    this.entries.get(key)?.holders.delete(holder);
  }

  get size(): number {
    return this.entries.size;
  }
}
