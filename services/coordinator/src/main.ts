import { failWhenNatsLost, runService } from "#common/lifecycle.js";
import { createLogger } from "#common/logger.js";
import { connectNats, serviceCredentials, type Nats } from "#common/nats.js";
import { Coordinator } from "./app/coordinator.js";
import { coordinatorConfig } from "./config.js";

/** `dwcp coordinator`: runs until SIGTERM. */
export async function runCoordinator(flags: { nats?: string; replicas?: string }): Promise<void> {
  const config = coordinatorConfig(flags);
  const log = createLogger("coordinator");
  const credentials = serviceCredentials(config.process, "coordinator", log);
  let nats: Nats | undefined;
  let coordinator: Coordinator | undefined;
  await runService({
    log,
    start: async (control) => {
      nats = await connectNats(config.natsUrl, "dwcp-coordinator", log, { credentials });
      failWhenNatsLost(nats.nc, control, { downLimitMs: config.process.natsDownLimitMs });
      coordinator = new Coordinator(nats, config, log);
      await coordinator.start();
      coordinator.onLoopEnded((reason, err) => control.fail(reason, err));
    },
    stop: async () => {
      await coordinator?.stop();
      if (nats && !nats.nc.isClosed()) await nats.nc.drain();
    },
  });
}
