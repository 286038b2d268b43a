import { basename } from "node:path";
import { it } from "vitest";
import { record } from "./report.js";
import { rng, runSeed, scenarioSeed, type Rng } from "./seed.js";
import { serverInfo } from "./server-version.js";

export interface ScenarioContext {
  rng: Rng;
  /** The scenario's own seed (derived from the run seed and its name). */
  seed: number;
  /** Measured figures for the report (RTOs in ms, rates, counts). */
  figures: Record<string, number | string | boolean>;
  /** Skip loudly: the reason goes to stderr, the reporter and the report; never a silent pass. */
  skip: (reason: string) => never;
}

const RUN_SEED = runSeed();

/**
 * A chaos test: seeded, timed, recorded in the run's report (see report.ts), and on failure
 * it prints the seed that replays it.
 */
export function scenario(
  file: string,
  name: string,
  fn: (s: ScenarioContext) => Promise<void>,
  timeoutMs = 180_000,
): void {
  it(name, { timeout: timeoutMs }, async (ctx) => {
    const seed = scenarioSeed(RUN_SEED, name);
    const figures: ScenarioContext["figures"] = {};
    const started = performance.now();
    const result: { outcome: "passed" | "failed" | "skipped"; reason?: string } = { outcome: "failed" };
    ctx.onTestFailed(() => {
      process.stderr.write(
        `\nchaos: "${name}" FAILED with seed ${RUN_SEED} (scenario seed ${seed}); ` +
          `replay: DWCP_CHAOS_SEED=${RUN_SEED} npx vitest run -c test/chaos/vitest.chaos.config.ts ` +
          `${basename(file)} -t "${name}"\n`,
      );
    });
    try {
      await fn({
        rng: rng(seed),
        seed,
        figures,
        skip: (why: string): never => {
          result.outcome = "skipped";
          result.reason = why;
          process.stderr.write(`\nchaos: SKIPPED "${name}": ${why}\n`);
          return ctx.skip(why);
        },
      });
      result.outcome = "passed";
    } catch (err) {
      if (result.outcome !== "skipped")
        result.reason = (err instanceof Error ? err.message : String(err)).split("\n")[0];
      throw err;
    } finally {
      const { outcome, reason } = result;
      record({
        scenario: name,
        file: basename(file),
        seed: RUN_SEED,
        outcome,
        reason,
        durationMs: performance.now() - started,
        figures,
        server: serverInfo().version,
        at: new Date().toISOString(),
      });
      if (Object.keys(figures).length > 0) process.stderr.write(`chaos: ${name}: ${JSON.stringify(figures)}\n`);
    }
  });
}
