import { failWhenNatsLost, runService } from "#common/lifecycle.js";
import { createLogger } from "#common/logger.js";
import { connectNats, serviceCredentials, type Nats } from "#common/nats.js";
import { CMD_STREAM, COORDINATOR_DURABLE, EVT_STREAM } from "#common/layout.js";
import { startObservability } from "#common/metrics/observe.js";
import { Coordinator } from "./app/coordinator.js";
import { coordinatorConfig, type CoordinatorFlags } from "./config.js";

/** `dwcp coordinator`: runs until SIGTERM. */
export async function runCoordinator(flags: CoordinatorFlags): Promise<void> {
  const config = coordinatorConfig(flags);
  const log = createLogger("coordinator");
  const credentials = serviceCredentials(config.process, "coordinator", log);
  let nats: Nats | undefined;
  let coordinator: Coordinator | undefined;
  const obs = await startObservability({
    settings: config.metrics,
    log,
    labels: { svc: "coordinator" },
    consumers: [{ stream: CMD_STREAM, consumer: COORDINATOR_DURABLE }],
    streams: [CMD_STREAM, EVT_STREAM],
    checks: { "event-log": () => (coordinator?.state === "running" ? true : "the event log is not folded yet") },
  });
  await runService({
    log,
    onState: obs.onState,
    start: async (control) => {
      nats = await connectNats(config.natsUrl, "dwcp-coordinator", log, { credentials });
      failWhenNatsLost(nats.nc, control, { downLimitMs: config.process.natsDownLimitMs });
      obs.attach(nats.nc, nats.jsm);
      coordinator = new Coordinator(nats, config, log);
      await coordinator.start();
      coordinator.onLoopEnded((reason, err) => control.fail(reason, err));
    },
    stop: async () => {
      await coordinator?.stop();
      if (nats && !nats.nc.isClosed()) await nats.nc.drain();
      await obs.close();
    },
  });
}
