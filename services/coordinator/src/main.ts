import { runService } from "#common/lifecycle.js";
import { createLogger } from "#common/logger.js";
import { connectNats, type Nats } from "#common/nats.js";
import { Coordinator } from "./app/coordinator.js";
import { coordinatorConfig } from "./config.js";

/** `dwcp coordinator`: runs until SIGTERM. */
export async function runCoordinator(flags: { nats?: string; replicas?: string }): Promise<void> {
  const config = coordinatorConfig(flags);
  const log = createLogger("coordinator");
  let nats: Nats | undefined;
  let coordinator: Coordinator | undefined;
  await runService({
    log,
    start: async () => {
      nats = await connectNats(config.natsUrl, "dwcp-coordinator", log);
      coordinator = new Coordinator(nats, config, log);
      await coordinator.start();
    },
    stop: async () => {
      await coordinator?.stop();
      await nats?.nc.drain();
    },
  });
}
