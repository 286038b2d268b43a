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
 * own chunks). A claim with an equal token and another (or no) stripe id is a new holder as above.
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

export type Claim<H> =
  | { granted: true /** The live holders this claim took over from; they must stop writing. */; superseded?: H[] }
  | { granted: false; newer: FenceToken };

interface Entry<H> {
  token: FenceToken;
  /** The stripe group holding the batch (undefined: a single session). */
  stripe: string | undefined;
  holders: Set<H>;
}

/**
 * In-memory table, bounded (least recently claimed keys are forgotten first). Pure: holders are
 * opaque values the caller compares by identity.
 */
export class FenceTable<H> {
  private readonly entries = new Map<string, Entry<H>>();

  /** @param maxKeys batches remembered; default 65536 (a few MiB). */
  constructor(private readonly maxKeys = 65_536) {}

  claim(key: string, token: FenceToken, holder: H, stripe?: string): Claim<H> {
    const current = this.entries.get(key);
    if (current !== undefined && compareTokens(token, current.token) < 0)
      return { granted: false, newer: current.token };
    this.entries.delete(key); // re-insert: the Map's order is the eviction order
    const joins = current !== undefined && stripe !== undefined && current.stripe === stripe;
    if (joins && compareTokens(token, current.token) === 0) {
      current.holders.add(holder);
      this.entries.set(key, current);
      return { granted: true };
    }
    this.entries.set(key, { token, stripe, holders: new Set([holder]) });
    while (this.entries.size > this.maxKeys) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
    const superseded = [...(current?.holders ?? [])].filter((h) => h !== holder);
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
