/**
 * Chunk-level resume of a run of chunks (a batch, or one stripe of it) after its connection
 * dropped. The destination remembers, per run, the chunks each receiving session wrote and
 * acknowledged; a sender that lost its connection reconnects and sends BATCH_BEGIN again for the
 * same run with the same fence token and `resume: n`, "the first n chunks of this run were
 * acknowledged; I do not send them again". The new session takes those n chunks' records (length,
 * CRC32C, BLAKE3) from the dropped session and receives only the rest. Pure and bounded.
 */
import type { FenceToken } from "./fence.js";
import { compareTokens, fenceKey } from "./fence.js";
import type { BatchBegin } from "./frames.js";

/** How a refused resume's message starts: the sender then sends the run whole. */
export const CANNOT_RESUME = "cannot resume";

/** Runs remembered; the least recently started is forgotten first (a forgotten run is sent again). */
export const MAX_RESUMABLE_RUNS = 1024;

/** One run of chunks: its batch (fence key), stripe and chunk range. */
export const runKey = (
  b: Pick<BatchBegin, "migrationId" | "destDir" | "destName" | "batch" | "stripe" | "firstChunk" | "chunkCount">,
): string => JSON.stringify([fenceKey(b), b.stripe ?? "", b.firstChunk, b.chunkCount]);

interface Entry<C> {
  token: FenceToken;
  /** Offset -> what the session wrote; the live map of the session (it grows as chunks land). */
  written: ReadonlyMap<number, C>;
}

export class ResumeTable<C> {
  private readonly runs = new Map<string, Entry<C>>();

  constructor(private readonly maxRuns = MAX_RESUMABLE_RUNS) {}

  /** A session starts receiving `key`'s chunks into `written`. */
  track(key: string, token: FenceToken, written: ReadonlyMap<number, C>): void {
    this.runs.delete(key);
    this.runs.set(key, { token, written });
    while (this.runs.size > this.maxRuns) {
      const oldest = this.runs.keys().next();
      if (oldest.done === true) break;
      this.runs.delete(oldest.value);
    }
  }

  /** The run is complete (BATCH_OK): nothing to resume. */
  done(key: string, written: ReadonlyMap<number, C>): void {
    if (this.runs.get(key)?.written === written) this.runs.delete(key);
  }

  /**
   * The records of the chunks at `offsets` written by an earlier session of the run with the same
   * token, or a reason why they cannot be resumed (unknown run, another token, a chunk missing).
   */
  resume(key: string, token: FenceToken, offsets: readonly number[]): Map<number, C> | string {
    const entry = this.runs.get(key);
    if (entry === undefined) return "this destination has no record of the run";
    if (compareTokens(entry.token, token) !== 0) return "the run's record belongs to another attempt";
    const out = new Map<number, C>();
    for (const offset of offsets) {
      const c = entry.written.get(offset);
      if (c === undefined) return `chunk at offset ${offset} was not written here`;
      out.set(offset, c);
    }
    return out;
  }
}

/** A run whose connection dropped keeps trying to resume for this long: a WAN outage of 2 min. */
export const RESUME_WINDOW_MS = 120_000;
