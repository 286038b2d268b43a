// Whether RAM precopy is getting anywhere. QEMU copies what the guest dirtied during the previous
// pass, so remaining bytes shrink pass by pass while the link outruns the guest; a guest that
// dirties as fast as the link carries keeps them level, and precopy would run until its timeout.
// Pure: the engine (infra/vm/live.ts) feeds it QEMU's passes and applies the next rung.

/** What the engine does when precopy stalls, in this order. */
export type ConvergenceRung = "auto-converge" | "postcopy";

export interface ConvergenceOptions {
  /** Passes without a 10% improvement on the best remaining count that make a stall. Default 5. */
  stallPasses?: number;
}

export interface Convergence {
  /** Fewest bytes remaining at any pass since the last rung. */
  best?: number;
  /** Passes since `best` last improved by 10%. */
  flatPasses: number;
  /** The last pass seen (QEMU's dirty-sync count). */
  pass: number;
}

export const DEFAULT_STALL_PASSES = 5;
/** A pass counts as progress when it leaves at most this share of the best remaining count. */
const PROGRESS = 0.9;

export const initialConvergence = (): Convergence => ({ flatPasses: 0, pass: -1 });

/**
 * Folds one query-migrate sample in: `stalled` once `stallPasses` passes in a row left no less
 * than 90% of the fewest bytes remaining so far. A new pass is counted once; a sample of the same
 * pass changes nothing. After a stall the caller applies a rung and starts over from `initial`.
 */
export function observePass(
  s: Convergence,
  sample: { pass: number; remainingBytes: number },
  o: ConvergenceOptions = {},
): { state: Convergence; stalled: boolean } {
  if (sample.pass <= s.pass) return { state: s, stalled: false };
  const improved = s.best === undefined || sample.remainingBytes <= s.best * PROGRESS;
  const state: Convergence = improved
    ? { best: sample.remainingBytes, flatPasses: 0, pass: sample.pass }
    : { best: s.best, flatPasses: s.flatPasses + 1, pass: sample.pass };
  return { state, stalled: state.flatPasses >= (o.stallPasses ?? DEFAULT_STALL_PASSES) };
}

/**
 * The rung to apply after a stall with `applied` already in force, or undefined when none is
 * left (the migration fails, saying it does not converge): auto-converge unless disabled, then
 * postcopy if allowed.
 */
export function nextRung(
  applied: readonly ConvergenceRung[],
  o: { autoConverge: boolean; postcopy: boolean },
): ConvergenceRung | undefined {
  if (o.autoConverge && !applied.includes("auto-converge")) return "auto-converge";
  if (o.postcopy && !applied.includes("postcopy")) return "postcopy";
  return undefined;
}
