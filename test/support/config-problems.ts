import { ConfigError } from "#common/errors.js";

/** The problems a config loader lists; fails the test if it does not throw a ConfigError. */
export function problemsOf(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected a ConfigError");
}
