import { join } from "node:path";
import { runService } from "#common/lifecycle.js";
import { createLogger } from "#common/logger.js";
import { DestinationAgent } from "./app/destination.js";
import { agentConfig, type AgentFlags } from "./config.js";
import { STORE_DIR } from "./infra/chunk-store.js";
import { serve } from "./infra/tcp.js";

/**
 * The destination replication agent: serves the chunk store under <root>/.dwcp-store to sources
 * that know DWCP_SECRET. Logs {"msg":"listening","port":N} once it accepts connections.
 */
export async function runReplicationAgent(flags: AgentFlags): Promise<void> {
  const cfg = agentConfig(flags);
  const log = createLogger("replication-agent", { root: cfg.root });
  let close: (() => Promise<void>) | undefined;
  await runService({
    log,
    start: async (control) => {
      const agent = await DestinationAgent.open(join(cfg.root, STORE_DIR), log);
      const srv = await serve((f) => agent.handle(f), {
        host: cfg.listenHost,
        port: cfg.listenPort,
        secret: cfg.secret,
      });
      srv.server.on("connection", (socket) =>
        log.info({ peer: `${socket.remoteAddress}:${socket.remotePort}` }, "agent connection"),
      );
      srv.server.on("error", (err) => control.fail("the agent's listening socket failed", err));
      close = () => srv.close();
      log.info({ port: srv.port, store: agent.store.dir }, "listening");
    },
    stop: async () => close?.(),
  });
}
