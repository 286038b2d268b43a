/**
 * What shared code (the event store) reports to metrics, through hooks that do nothing until the
 * metrics registry (registry.ts) is loaded and fills them in: a CLI command that serves no
 * metrics never loads prom-client.
 */
export const appendHooks = {
  /** One append done (or given up): its seconds, resends included, and how many resends it took. */
  observe(_seconds: number, _resends: number): void {},
};

/** Seconds since `start` (a performance.now() reading). */
export const secondsSince = (start: number): number => (performance.now() - start) / 1000;
