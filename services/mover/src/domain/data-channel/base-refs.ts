/**
 * The source's side of an incremental batch: whether the next chunk goes as a BASE reference
 * (its BLAKE3 only; the destination takes the bytes from its base file) or with its data. A
 * reference that misses costs the chunk's data anyway plus a round trip, so the batch stops
 * referring as soon as references do not pay: at once when the destination has no base file
 * for the volume (NO_BASE), or after BASE_MISS_STREAK misses in a row (a base that is some
 * other file, or a region rewritten since). Pure: the session feeds it the destination's answers.
 */

/** Base misses in a row after which a batch sends the rest of its chunks with their data. */
export const BASE_MISS_STREAK = 8;

export type BaseAnswer = "hit" | "mismatch" | "no-base";

export interface BaseRefs {
  /** The batch is incremental and no answer has yet told it to stop referring. */
  referring: boolean;
  /** Misses since the last hit. */
  streak: number;
}

export const baseRefs = (incremental: boolean): BaseRefs => ({ referring: incremental, streak: 0 });

/** Whether a chunk goes as a BASE reference: a non-zero chunk sent for the first time while referring. */
export function refersToBase(s: BaseRefs, chunk: { zero: boolean; firstSend: boolean }): boolean {
  return s.referring && !chunk.zero && chunk.firstSend;
}

/** The state after the destination answered a BASE reference. */
export function afterBaseAnswer(s: BaseRefs, answer: BaseAnswer): BaseRefs {
  switch (answer) {
    case "hit":
      return { ...s, streak: 0 };
    case "mismatch": {
      const streak = s.streak + 1;
      return { referring: s.referring && streak < BASE_MISS_STREAK, streak };
    }
    case "no-base":
      return { referring: false, streak: s.streak + 1 };
    default: {
      const never: never = answer;
      return never;
    }
  }
}
