import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "./logger.js";

/** Where a service is in its life; `stopped` and `failed` are final, and `failed` says why in the log. */
export type Lifecycle = "starting" | "running" | "draining" | "stopped" | "failed";

/** What a running service uses to report that it cannot continue. */
export interface ServiceControl {
  /**
   * The service cannot continue: it is drained (stop() within the grace period), the reason is
   * logged at fatal, and the process exits non-zero. The first call wins; calls once the service
   * is draining are ignored.
   */
  fail(reason: string, err?: unknown): void;
}

/**
 * Runs a service until SIGTERM/SIGINT, then drains it within `graceMs`; a second signal or an
 * expired grace period exits at once. A start-up error, or `control.fail()` from the service,
 * ends it `failed`: the reason logged, exit code 1. Resolves with the final state.
 */
export async function runService(opts: {
  log: Logger;
  start: (control: ServiceControl) => Promise<void>;
  stop: () => Promise<void>;
  /** How long draining may take, in ms. Default 10000. */
  graceMs?: number;
  /** Told each state as the service enters it (its /healthz and lifecycle gauge). */
  onState?: (state: Lifecycle) => void;
}): Promise<Lifecycle> {
  const { log } = opts;
  let state: Lifecycle = "starting";
  const enter = (s: Lifecycle): void => {
    state = s;
    opts.onState?.(s);
  };
  enter("starting");
  let failure: { reason: string; err?: unknown } | undefined;
  let signal: NodeJS.Signals | undefined;
  let wake!: () => void;
  const woken = new Promise<void>((resolve) => (wake = resolve));
  const control: ServiceControl = {
    fail: (reason, err) => {
      if (failure !== undefined || state === "draining") return;
      failure = { reason, err };
      wake();
    },
  };
  const onSignal = (s: NodeJS.Signals): void => {
    if (signal !== undefined) process.exit(130);
    signal = s;
    wake();
  };

  try {
    await opts.start(control);
  } catch (err) {
    failure ??= { reason: "start-up failed", err };
  }
  if (failure === undefined) {
    enter("running");
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    log.info({ state }, "running");
    await woken;
  }

  if (failure !== undefined) {
    log.fatal({ err: failure.err, reason: failure.reason, state: "failed" }, `service failed: ${failure.reason}`);
    process.exitCode = 1;
  } else {
    log.info({ signal }, "draining");
  }
  enter("draining");
  const timer = setTimeout(() => {
    log.warn("grace period over; exiting");
    process.exit(1);
  }, opts.graceMs ?? 10_000);
  timer.unref();
  try {
    await opts.stop();
  } catch (err) {
    log.error({ err }, "stop failed");
    process.exitCode = 1;
  } finally {
    clearTimeout(timer);
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
  enter(failure === undefined ? "stopped" : "failed");
  log.info({ state, reason: failure?.reason }, state);
  return state;
}

/**
 * Fails the service when its NATS connection closes other than by stop() (the server refused it
 * for good, or the client gave up), or, with `downLimitMs` > 0, when it stays disconnected that
 * long: the connection is then closed and the service ends `failed`. 0 reconnects forever.
 */
export function failWhenNatsLost(nc: NatsConnection, control: ServiceControl, o: { downLimitMs: number }): void {
  void nc.closed().then((err) => control.fail("NATS connection closed", err));
  if (o.downLimitMs <= 0) return;
  let timer: NodeJS.Timeout | undefined;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect" && timer === undefined) {
        timer = setTimeout(() => {
          control.fail(`NATS unreachable for ${o.downLimitMs} ms`);
          void nc.close();
        }, o.downLimitMs);
      } else if (s.type === "reconnect") {
        clearTimeout(timer);
        timer = undefined;
      }
    }
    clearTimeout(timer);
  })();
}
