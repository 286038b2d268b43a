import { join } from "node:path";
import { runService } from "#common/lifecycle.js";
import { createLogger } from "#common/logger.js";
import { DestinationAgent } from "./app/destination.js";
import { agentConfig, type AgentFlags } from "./config.js";
import { STORE_DIR } from "./infra/chunk-store.js";
import { serve } from "./infra/tcp.js";
import { PLAINTEXT_WARNING } from "#common/secure-link/tls.js";
import { connectNats, serviceCredentials } from "#common/nats.js";
import { replicationRole } from "#common/credentials/provision.js";
import { ReplicationService } from "./app/service.js";
import { replicationRpc, serveCommands } from "./infra/commands.js";
import { hostRoots } from "./infra/host-roots.js";
import { ReplicationLog } from "./infra/replication-log.js";
import { processEventTrust } from "#common/signing.js";
import { serviceConfig, type ServiceFlags } from "./service-config.js";

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
      if (cfg.link.mode === "plaintext") log.warn(PLAINTEXT_WARNING);
      const srv = await serve((f) => agent.handle(f), {
        host: cfg.listenHost,
        port: cfg.listenPort,
        secret: cfg.secret,
        ...(cfg.link.mode === "tls" ? { tls: { tls: cfg.link.tls, log } } : {}),
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

/** A running replication service (see startReplicationService). */
export interface ReplicationServiceHandle {
  /** The subject it serves. */
  subject: string;
  /** Stops taking commands, lets the syncs in flight finish, closes its NATS connection. */
  stop(): Promise<void>;
}

/**
 * The source side of replication for one host: takes ReplicateVm commands on
 * dwcp.replication.<host>.rpc and runs each sync (scan, send, commit, append, retention).
 */
export async function startReplicationService(
  flags: ServiceFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ReplicationServiceHandle> {
  const cfg = serviceConfig(flags, env);
  const logger = createLogger("replication", { host: cfg.host });
  const credentials = serviceCredentials(cfg.process, replicationRole(cfg.host), logger);
  const nats = await connectNats(cfg.natsUrl, `dwcp-replication-${cfg.host}`, logger, { credentials });
  const service = new ReplicationService({
    host: cfg.host,
    root: hostRoots(cfg.roots, cfg.dataDir),
    log: new ReplicationLog(nats),
    nats,
    logger,
    ...(cfg.secret ? { secret: cfg.secret } : {}),
    ...(cfg.link ? { link: cfg.link } : {}),
  });
  if (cfg.link?.mode === "plaintext") logger.warn(PLAINTEXT_WARNING);
  const sub = serveCommands(nats.nc, cfg.host, logger, (cmd, send) => service.handle(cmd, send));
  await nats.nc.flush();
  logger.info({ subject: replicationRpc(cfg.host) }, "serving");
  return {
    subject: replicationRpc(cfg.host),
    async stop() {
      await sub.drain();
      await service.idle();
      await nats.nc.close();
    },
  };
}

/** `dwcp replication-service`: startReplicationService until SIGTERM/SIGINT, then drains. */
export async function runReplicationService(flags: ServiceFlags): Promise<void> {
  const log = createLogger("replication", { host: flags.host });
  let handle: ReplicationServiceHandle | undefined;
  await runService({
    log,
    start: async () => {
      // Secure by default: no signing key and trust file, no start (unless DWCP_EVENTS_UNSIGNED=on).
      processEventTrust({ warn: (msg) => log.warn(msg) });
      handle = await startReplicationService(flags);
    },
    stop: async () => handle?.stop(),
  });
}
