import type { Logger } from "./logger.js";

/**
 * Runs a service until SIGTERM/SIGINT, then drains it within `graceMs`; a second signal or an
 * expired grace period exits at once. Start-up failures exit non-zero with the reason logged.
 */
export async function runService(opts: {
  log: Logger;
  start: () => Promise<void>;
  stop: () => Promise<void>;
  graceMs?: number;
}): Promise<void> {
  const { log } = opts;
  try {
    await opts.start();
  } catch (err) {
    log.fatal({ err }, "start-up failed");
    process.exitCode = 1;
    await opts.stop().catch(() => undefined);
    return;
  }
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) process.exit(130);
      stopping = true;
      log.info({ signal }, "draining");
      const timer = setTimeout(() => {
        log.warn("grace period over; exiting");
        process.exit(1);
      }, opts.graceMs ?? 10_000);
      timer.unref();
      opts.stop().then(
        () => (log.info("stopped"), resolve()),
        (err: unknown) => (log.error({ err }, "stop failed"), (process.exitCode = 1), resolve()),
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
