import type { BaseKnown } from "./base-sums.js";

/**
 * The source's side of an incremental batch: whether the next chunk goes as a BASE reference
 * (its BLAKE3 only; the destination takes the bytes from its base file) or with its data. A
 * reference that misses costs little on the wire (64 bytes) but a second read of the chunk here,
 * a read and hash of the base there, and the chunk's data anyway, so a batch refers less while
 * references keep missing: after BASE_MISS_STREAK misses in a row it sends chunks with their data
 * and refers again only now and then (1, 2, 4 ... up to MAX_UNREFERRED chunks apart while they
 * keep missing; a hit ends that), which still finds an unchanged region after a rewritten one. A
 * destination with no base file for the volume (NO_BASE) ends referring for the batch at once.
 * Pure: the session feeds it the destination's answers.
 */

/** Base misses in a row after which a batch refers only now and then. */
export const BASE_MISS_STREAK = 8;
/** Most chunks sent with their data between two references while references keep missing. */
export const MAX_UNREFERRED = 32;

export type BaseAnswer = "hit" | "mismatch" | "no-base";

export interface BaseRefs {
  /** The batch is incremental and the destination has not said it has no base. */
  referring: boolean;
  /** Misses since the last hit. */
  streak: number;
  /** Chunks still to send with their data before the next reference. */
  unreferred: number;
}

export const baseRefs = (incremental: boolean): BaseRefs => ({ referring: incremental, streak: 0, unreferred: 0 });

/**
 * Whether a chunk goes as a BASE reference (only a non-zero chunk's first send), and the state
 * after that decision.
 */
export function nextSend(s: BaseRefs, chunk: { zero: boolean; firstSend: boolean }): { base: boolean; next: BaseRefs } {
  if (!s.referring || chunk.zero || !chunk.firstSend) return { base: false, next: s };
  if (s.unreferred > 0) return { base: false, next: { ...s, unreferred: s.unreferred - 1 } };
  return { base: true, next: s };
}

/**
 * As nextSend, knowing what the destination said of its base ahead (BASE_SUMS, see base-sums.ts):
 * a chunk the base holds goes as a reference `expected` to hit, a changed one with its data at
 * once (no round trip spent on it, so the references' state stays), an unknown one as nextSend
 * says. Only for an incremental batch's chunks.
 */
export function sendKnowing(
  s: BaseRefs,
  chunk: { zero: boolean; firstSend: boolean },
  known: BaseKnown,
): { base: boolean; expected: boolean; next: BaseRefs } {
  if (chunk.zero || !chunk.firstSend || known === "unknown") return { ...nextSend(s, chunk), expected: false };
  return { base: known === "same", expected: known === "same", next: s };
}

/** The state after the destination answered a BASE reference. */
export function afterBaseAnswer(s: BaseRefs, answer: BaseAnswer): BaseRefs {
  switch (answer) {
    case "hit":
      return { ...s, streak: 0, unreferred: 0 };
    case "mismatch": {
      const streak = s.streak + 1;
      if (streak < BASE_MISS_STREAK) return { ...s, streak };
      return { ...s, streak, unreferred: Math.min(MAX_UNREFERRED, 2 ** (streak - BASE_MISS_STREAK)) };
    }
    case "no-base":
      return { referring: false, streak: s.streak + 1, unreferred: 0 };
    default: {
      const never: never = answer;
      return never;
    }
  }
}
