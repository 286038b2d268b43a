import { failWhenNatsLost, runService } from "#common/lifecycle.js";
import { createLogger } from "#common/logger.js";
import { connectNats, serviceCredentials, type Nats } from "#common/nats.js";
import { moverRole } from "#common/credentials/provision.js";
import { MOVER_DURABLE, workStream } from "#common/layout.js";
import { startObservability } from "#common/metrics/observe.js";
import { Mover } from "./app/mover.js";
import { moverConfig, type MoverFlags } from "./config.js";
import { pollRootSpace } from "./infra/root-space.js";

/** `dwcp mover`: runs until SIGTERM. */
export async function runMover(flags: MoverFlags): Promise<void> {
  const config = moverConfig(flags);
  const log = createLogger("mover", { host: config.host });
  const credentials = serviceCredentials(config.process, moverRole(config.host), log);
  let nats: Nats | undefined;
  let mover: Mover | undefined;
  const obs = await startObservability({
    settings: config.metrics,
    log,
    labels: { svc: "mover", host: config.host },
    consumers: [{ stream: workStream(config.host), consumer: MOVER_DURABLE }],
    streams: [workStream(config.host)],
    checks: { "data-port": () => (mover?.dataAddress === undefined ? "the data channel is not listening" : true) },
    poll: () => pollRootSpace(config.roots),
  });
  await runService({
    log,
    graceMs: 30_000,
    onState: obs.onState,
    start: async (control) => {
      nats = await connectNats(config.natsUrl, `dwcp-mover-${config.host}`, log, { credentials });
      failWhenNatsLost(nats.nc, control, { downLimitMs: config.process.natsDownLimitMs });
      obs.attach(nats.nc, nats.jsm);
      mover = new Mover(nats, config, log);
      await mover.start();
      mover.onLoopEnded((reason, err) => control.fail(reason, err));
    },
    stop: async () => {
      await mover?.stop();
      if (nats && !nats.nc.isClosed()) await nats.nc.drain();
      await obs.close();
    },
  });
}
