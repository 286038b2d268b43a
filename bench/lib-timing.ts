// Throughput timing for benches: best of several samples, each long enough to dwarf timer
// noise. "Best" rather than median because the interference on a shared 2-core machine only
// ever slows a run down.
import { performance } from "node:perf_hooks";

export interface TimingOptions {
  /** Samples taken; the best one is reported. */
  samples: number;
  /** Each sample repeats the call until it has run at least this long, in ms. */
  minSampleMs: number;
}

export const GB = 1e9;

function calibrate(firstMs: number, minSampleMs: number): number {
  return Math.max(1, Math.ceil(minSampleMs / Math.max(firstMs, 1e-3)));
}

/** Best throughput of fn over `bytes` per call, in GB/s (10^9 bytes/s). */
export function measureSync(bytes: number, fn: () => unknown, opts: TimingOptions): number {
  let t = performance.now();
  fn(); // warm-up, also sizes the sample
  const reps = calibrate(performance.now() - t, opts.minSampleMs);
  let bestMs = Infinity;
  for (let s = 0; s < opts.samples; s++) {
    t = performance.now();
    for (let r = 0; r < reps; r++) fn();
    bestMs = Math.min(bestMs, (performance.now() - t) / reps);
  }
  return bytes / (bestMs / 1e3) / GB;
}

/** Like measureSync for a promise-returning call; bytes is what one call processes. */
export async function measureAsync(bytes: number, fn: () => Promise<unknown>, opts: TimingOptions): Promise<number> {
  let t = performance.now();
  await fn();
  const reps = calibrate(performance.now() - t, opts.minSampleMs);
  let bestMs = Infinity;
  for (let s = 0; s < opts.samples; s++) {
    t = performance.now();
    for (let r = 0; r < reps; r++) await fn();
    bestMs = Math.min(bestMs, (performance.now() - t) / reps);
  }
  return bytes / (bestMs / 1e3) / GB;
}

export function fmt(gbps: number | undefined, digits = 2): string {
  return gbps === undefined ? "-" : gbps.toFixed(digits);
}
