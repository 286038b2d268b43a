import { prng } from "../../../cli/image.js";

/** A seeded source of chaos decisions: which batch, which chunk, which node, which bit. */
export interface Rng {
  readonly seed: number;
  /** Uniform in [0, 1). */
  float(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Uniform integer in [lo, hi]. */
  between(lo: number, hi: number): number;
  pick<T>(items: readonly T[]): T;
}

export function rng(seed: number): Rng {
  const next = prng(seed);
  const float = (): number => next() / 2 ** 32;
  const int = (n: number): number => Math.floor(float() * n);
  return {
    seed,
    float,
    int,
    between: (lo, hi) => lo + int(hi - lo + 1),
    pick: <T>(items: readonly T[]): T => {
      const item = items[int(items.length)];
      if (item === undefined) throw new RangeError("pick from an empty list");
      return item;
    },
  };
}

/**
 * The run's seed: DWCP_CHAOS_SEED if set (to replay a failure), else random. Each scenario
 * derives its own seed from it and its name, so replaying one scenario does not depend on which
 * others ran before it.
 */
export function runSeed(): number {
  const env = process.env["DWCP_CHAOS_SEED"];
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** 32)
      throw new Error(`DWCP_CHAOS_SEED must be an integer in [0, 2^32), got "${env}"`);
    return n;
  }
  return Math.floor(Math.random() * 2 ** 32);
}

export function scenarioSeed(run: number, name: string): number {
  let h = run >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
