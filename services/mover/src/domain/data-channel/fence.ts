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
 * above. A claim of the group whose run overlaps a holder's is that stripe resumed on a new
 * connection: the old session is superseded, as TCP may still deliver on its abandoned connection
 * chunks the new session's RESUME_AT must not miss.
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

/** The chunks one stripe of a batch carries (BatchBegin's firstChunk and chunkCount). */
export interface Run {
  firstChunk: number;
  chunkCount: number;
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
  | { granted: false; newer: FenceToken };

interface Entry<H> {
  token: FenceToken;
  /** The stripe group holding the batch (undefined: a single session). */
  stripe: string | undefined;
  /** Each live holder and the run of chunks it writes, if it named one. */
  holders: Map<H, Run | undefined>;
}

/**
 * In-memory table, bounded (least recently claimed keys are forgotten first). Pure: holders are
 * opaque values the caller compares by identity.
 */
export class FenceTable<H> {
  private readonly entries = new Map<string, Entry<H>>();

  /** @param maxKeys batches remembered; default 65536 (a few MiB). */
  constructor(private readonly maxKeys = 65_536) {}

  /** `run`: the chunks `holder` writes, for a stripe; a stripe of the group holding `run` is superseded. */
  claim(key: string, token: FenceToken, holder: H, stripe?: string, run?: Run): Claim<H> {
    const current = this.entries.get(key);
    if (current !== undefined && compareTokens(token, current.token) < 0)
      return { granted: false, newer: current.token };
    this.entries.delete(key); // re-insert: the Map's order is the eviction order
    const joins = current !== undefined && stripe !== undefined && current.stripe === stripe;
    if (joins && compareTokens(token, current.token) === 0) {
      const resumed = [...current.holders].filter(([h, r]) => h !== holder && overlaps(r, run)).map(([h]) => h);
      for (const h of resumed) current.holders.delete(h);
      current.holders.set(holder, run);
      this.entries.set(key, current);
      return resumed.length === 0 ? { granted: true } : { granted: true, superseded: resumed, resumed: true };
    }
    this.entries.set(key, { token, stripe, holders: new Map([[holder, run]]) });
    while (this.entries.size > this.maxKeys) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
    const superseded = [...(current?.holders.keys() ?? [])].filter((h) => h !== holder);
    return superseded.length === 0 ? { granted: true } : { granted: true, superseded };
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
