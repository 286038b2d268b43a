/**
 * Chunk-level resume of a run of chunks (a batch, or one stripe of it). The destination remembers,
 * per batch, the chunks each receiving session wrote and verified. A sender that lost its
 * connection, or a later delivery of the batch's work item (the sending mover was restarted or
 * stalled), sends BATCH_BEGIN with `resume: true`, "tell me what of this run you already hold".
 * After the claim (an older holder is fenced and its writes have settled) the destination takes
 * the records of the run's longest committed prefix from those sessions, fsyncs the file and
 * answers RESUME_AT with the prefix's CRC32Cs; the sender checks them against its own record of
 * each chunk (or, after a restart, against the chunk read again from the source) and sends only
 * from the first chunk that is not committed. Pure and bounded.
 *
 * Only sessions of the same attempt count: a new attempt is the coordinator's retry after a
 * failure, and sends its batch whole.
 */
import type { FenceToken } from "./fence.js";
import { fenceKey } from "./fence.js";
import type { BatchBegin } from "./frames.js";

/** Batches remembered; the least recently started is forgotten first (a forgotten batch is sent again). */
export const MAX_RESUMABLE_BATCHES = 1024;
/** Sessions remembered per batch (stripes, reconnections, redeliveries); the oldest is forgotten first. */
export const MAX_SESSIONS_PER_BATCH = 64;

/** The batch a run belongs to: resume records are kept per batch, whatever the striping. */
export const batchKey = (b: Pick<BatchBegin, "migrationId" | "destDir" | "destName" | "batch">): string => fenceKey(b);

interface Entry<C> {
  attempt: number;
  /** Offset -> what a session wrote; the live maps of the sessions (they grow as chunks land), newest last. */
  sessions: ReadonlyMap<number, C>[];
}

export class ResumeTable<C> {
  private readonly batches = new Map<string, Entry<C>>();

  constructor(
    private readonly maxBatches = MAX_RESUMABLE_BATCHES,
    private readonly maxSessions = MAX_SESSIONS_PER_BATCH,
  ) {}

  /** A session holding `token` starts receiving chunks of the batch `key` into `written`. */
  track(key: string, token: FenceToken, written: ReadonlyMap<number, C>): void {
    const current = this.batches.get(key);
    this.batches.delete(key);
    const entry: Entry<C> =
      current !== undefined && current.attempt === token.attempt ? current : { attempt: token.attempt, sessions: [] };
    if (!entry.sessions.includes(written)) entry.sessions.push(written);
    while (entry.sessions.length > this.maxSessions) entry.sessions.shift();
    this.batches.set(key, entry);
    while (this.batches.size > this.maxBatches) {
      const oldest = this.batches.keys().next();
      if (oldest.done === true) break;
      this.batches.delete(oldest.value);
    }
  }

  /** The write records of the sessions of `token`'s attempt at the batch `key` (none for another attempt). */
  sessionsOf(key: string, token: FenceToken): readonly ReadonlyMap<number, C>[] {
    const entry = this.batches.get(key);
    return entry === undefined || entry.attempt !== token.attempt ? [] : entry.sessions;
  }

  /**
   * The records of the longest prefix of `offsets` that sessions of `token`'s attempt wrote
   * (the newest session's record of a chunk wins), at most `max` of them.
   */
  committedPrefix(key: string, token: FenceToken, offsets: readonly number[], max = offsets.length): Map<number, C> {
    const out = new Map<number, C>();
    const entry = this.batches.get(key);
    if (entry === undefined || entry.attempt !== token.attempt) return out;
    for (const offset of offsets.slice(0, max)) {
      const c = entry.sessions.findLast((s) => s.has(offset))?.get(offset);
      if (c === undefined) break;
      out.set(offset, c);
    }
    return out;
  }
}

/**
 * Whether a session of `token`'s attempt other than `own` already wrote the chunk at `offset`: a
 * sender that sends it again resent a committed chunk (resume should have skipped it).
 */
export function writtenBefore<C>(
  table: ResumeTable<C>,
  key: string,
  token: FenceToken,
  offset: number,
  own: ReadonlyMap<number, C>,
): boolean {
  return table.sessionsOf(key, token).some((s) => s !== own && s.has(offset));
}

/** A run whose connection dropped keeps trying to resume for this long: a WAN outage of 2 min. */
export const RESUME_WINDOW_MS = 120_000;
