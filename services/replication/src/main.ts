import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { runService } from "#common/lifecycle.js";
import { openRootDir, type DirHandle } from "#native/index.js";
import { createLogger } from "#common/logger.js";
import { AgentStores } from "./app/agent-stores.js";
import { agentConfig, type AgentFlags } from "./config.js";
import { serve } from "./infra/tcp.js";
import { PLAINTEXT_WARNING } from "#common/secure-link/tls.js";
import { connectNats, serviceCredentials, type Nats } from "#common/nats.js";
import { EVT_STREAM } from "#common/layout.js";
import { startObservability } from "#common/metrics/observe.js";
import { replicationRole } from "#common/credentials/provision.js";
import { ReplicationService } from "./app/service.js";
import { replicationRpc, serveCommands } from "./infra/commands.js";
import { hostRoots } from "./infra/host-roots.js";
import { isKnownHost } from "./infra/known-hosts.js";
import { ReplicationLog } from "./infra/replication-log.js";
import { configuredEventTrust, eventTrustSettings, loadEventTrust, processEventTrust } from "#common/signing.js";
import { serviceConfig, type ServiceFlags } from "./service-config.js";

/**
 * The destination replication agent: serves the chunk stores under <root>/<dir>/.dwcp-store (the
 * directory a source opens, <root>/.dwcp-store if it opens none) to sources that know DWCP_SECRET.
 * Logs {"msg":"listening","port":N} once it accepts connections. The root and the stores'
 * directories are held by fd for the agent's lifetime: every file is created and renamed beneath
 * them, so a store directory swapped for a symlink cannot send a write elsewhere.
 */
export async function runReplicationAgent(flags: AgentFlags): Promise<void> {
  const cfg = agentConfig(flags);
  const log = createLogger("replication-agent", { root: cfg.root });
  let close: (() => Promise<void>) | undefined;
  let root: DirHandle | undefined;
  const obs = await startObservability({
    settings: cfg.metrics,
    log,
    labels: { svc: "replication-agent" },
    nats: false,
    checks: { listening: () => (close === undefined ? "the agent is not listening yet" : true) },
  });
  await runService({
    log,
    onState: obs.onState,
    start: async (control) => {
      await mkdir(cfg.root, { recursive: true }); // the operator's root: trusted as configured
      root = openRootDir(resolve(cfg.root));
      const stores = new AgentStores(root, log);
      const agent = await stores.open(""); // the root's own store: made and checked at start, as before
      if (cfg.link.mode === "plaintext") log.warn(PLAINTEXT_WARNING);
      const srv = await serve(() => stores.session(), {
        host: cfg.listenHost,
        port: cfg.listenPort,
        secret: cfg.secret,
        ...(cfg.link.mode === "tls" ? { tls: { tls: cfg.link.tls, log } } : {}),
      });
      srv.server.on("connection", (socket) =>
        log.info({ peer: `${socket.remoteAddress}:${socket.remotePort}` }, "agent connection"),
      );
      srv.server.on("error", (err) => control.fail("the agent's listening socket failed", err));
      close = async () => {
        await srv.close();
        await stores.close();
      };
      log.info({ port: srv.port, store: agent.store.dir }, "listening");
    },
    stop: async () => {
      await close?.();
      root?.close();
      await obs.close();
    },
  });
}

/** A running replication service (see startReplicationService). */
export interface ReplicationServiceHandle {
  /** The subject it serves. */
  subject: string;
  /** Its NATS connection (closed by stop()). */
  nats: Nats;
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
    vmStateDir: resolve(cfg.dataDir, "vms"),
    log: new ReplicationLog(nats, { trust: eventTrustOf(env) }),
    nats,
    logger,
    knownHost: (host) => isKnownHost(nats.nc, host),
    ...(cfg.secret ? { secret: cfg.secret } : {}),
    ...(cfg.link ? { link: cfg.link } : {}),
  });
  if (cfg.link?.mode === "plaintext") logger.warn(PLAINTEXT_WARNING);
  const sub = serveCommands(nats.nc, cfg.host, logger, (cmd, send) => service.handle(cmd, send));
  await nats.nc.flush();
  logger.info({ subject: replicationRpc(cfg.host) }, "serving");
  return {
    subject: replicationRpc(cfg.host),
    nats,
    async stop() {
      await sub.drain();
      await service.idle();
      await nats.nc.close();
    },
  };
}

/**
 * The event trust of `env` (its key signs what this service appends): an in-process service gets
 * the role's files in `env`, not in the process's environment. Unconfigured: the process's.
 */
function eventTrustOf(env: NodeJS.ProcessEnv): ReturnType<typeof configuredEventTrust> {
  const s = eventTrustSettings(env);
  return s.unsigned || s.nkeyFile !== undefined || s.trustFile !== undefined
    ? loadEventTrust(s)
    : configuredEventTrust();
}

/** `dwcp replication-service`: startReplicationService until SIGTERM/SIGINT, then drains. */
export async function runReplicationService(flags: ServiceFlags): Promise<void> {
  const log = createLogger("replication", { host: flags.host });
  const cfg = serviceConfig(flags);
  let handle: ReplicationServiceHandle | undefined;
  const obs = await startObservability({
    settings: cfg.metrics,
    log,
    labels: { svc: "replication", host: cfg.host },
    streams: [EVT_STREAM],
    checks: { commands: () => (handle === undefined ? `not serving ${replicationRpc(cfg.host)} yet` : true) },
  });
  await runService({
    log,
    onState: obs.onState,
    start: async () => {
      // Secure by default: no signing key and trust file, no start (unless DWCP_EVENTS_UNSIGNED=on).
      processEventTrust({ warn: (msg) => log.warn(msg) });
      handle = await startReplicationService(flags);
      obs.attach(handle.nats.nc, handle.nats.jsm);
    },
    stop: async () => {
      await handle?.stop();
      await obs.close();
    },
  });
}
