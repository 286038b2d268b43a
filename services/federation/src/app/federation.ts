import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { DwcpError } from "#common/errors.js";
import { ensureLayout } from "#common/layout.js";
import type { Logger } from "#common/logger.js";
import { natsCredentialsOf } from "#common/credentials/connect.js";
import { provisionFederation, type FederationCredentials } from "#common/credentials/federation.js";
import { connectNats, type Nats, type NatsCredentials } from "#common/nats.js";
import { EventSigner, EventVerifier, type EventTrust } from "#common/signing.js";
import {
  freePort,
  startNatsServer as spawnNatsServer,
  type NatsServerHandle as ServerProcess,
} from "#common/nats-server.js";
import { CredentialsError, type Role } from "#common/credentials/provision.js";
import { federationConfig, siteIds, type FederationConfig, type FederationConfigInput } from "../config.js";
import { UnknownSiteError } from "../domain/federation/errors.js";
import type { FederationView } from "../domain/federation/state.js";
import { LinkProxy } from "../infra/link-proxy.js";
import { waitForDomains } from "../infra/links.js";
import { renderHubConfig, renderSiteConfig } from "../infra/nats-config.js";
import { Site, type SiteDeps } from "./site.js";

/** How long startFederation waits for every site to see every other site's join. */
const JOIN_TIMEOUT_MS = 30_000;

export interface FederationSite {
  id: string;
  /** Client URL of the site's own nats-server. */
  url: string;
  pid: number;
  site: Site;
}

export interface FederationHandle {
  topology: FederationConfig["topology"];
  /** The federation's CA, every site's role credentials and its trust file. */
  credentials: FederationCredentials;
  /** A new connection to site `id`'s server as its `role` (default admin); the caller closes it. */
  connect(id: string, role?: Role, name?: string): Promise<Nats>;
  sites: FederationSite[];
  /** The stateless hub ("hub" topology only). */
  hub?: { url: string; pid: number };
  site(id: string): Site;
  /** Cuts the site's leafnode link (its local writes keep working). */
  partition(id: string): void;
  heal(id: string): void;
  /**
   * Resolves once the site's cut link has refused `attempts` more reconnect attempts: proof that
   * the site tried to get back (and, with the hub's dead-end advertisement in its list, that it
   * found no way around the partition).
   */
  whenRefused(id: string, attempts: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Where the servers run when not on this host's loopback (bench:federation --wan runs each in a
 * network namespace of the WAN emulator). Sites dial the hub directly (no LinkProxy).
 */
export interface ServerPlacement {
  /** The nats-server binary for server `name` ("hub" or a site id), e.g. a wrapper that runs it elsewhere. */
  bin(name: string): string;
  /** The address the hub's leafnode listener binds and every site dials; the hub's certificate must name it. */
  hubLeafHost: string;
  /**
   * A client URL for this process to site `id`'s server, which listens on 127.0.0.1:`port` where
   * it runs. Its host must be one the site's certificate names (127.0.0.1: a relay).
   */
  reach(id: string, port: number): Promise<string>;
}

/** What startFederation takes besides its config. */
export interface FederationDeps extends Omit<SiteDeps, "credentials"> {
  /**
   * The federation's credentials (provisionFederation). Default: provisioned in
   * `<dataDir>/credentials` for the sites, with no hosts.
   */
  credentials?: FederationCredentials;
  /** Default: every server on this host's loopback. Needs the "hub" topology and partitionable: false. */
  placement?: ServerPlacement;
}

interface Parts {
  servers: ServerProcess[];
  proxies: Map<string, LinkProxy>;
  /** A permanently cut relay: the leafnode address the hub advertises (see HubServerConfig). */
  deadEnd?: LinkProxy;
  sites: Site[];
  credentials: FederationCredentials;
  /** Each site's server PID. */
  pids: Map<string, number>;
  placement: ServerPlacement | undefined;
}

/** partition()/heal() on a federation whose links run without relays. */
export class LinksNotCuttableError extends DwcpError {
  readonly code = "LINKS_NOT_CUTTABLE" as const;
  readonly retryable = false;
  constructor() {
    super("this federation was started with partitionable: false; start it with partitionable: true to cut links");
  }
}

/** A placement (servers off loopback) asked of a federation that cannot have one. */
export class PlacementUnsupportedError extends DwcpError {
  readonly code = "PLACEMENT_UNSUPPORTED" as const;
  readonly retryable = false;
  constructor() {
    super("servers placed off loopback need topology: hub and partitionable: false (no link proxies)");
  }
}

/**
 * Starts a federation on loopback: one nats-server per site, each its own JetStream domain, all
 * dialling one hub over leafnodes (through a LinkProxy per link when partitionable, so that a
 * link can be cut), then one Site per server. Every log exists before any mirror copies it, and
 * every site reaches every other domain before the mirrors start. `deps.placement` runs the
 * servers elsewhere (bench:federation --wan: each in a namespace of the emulated WAN).
 */
export async function startFederation(
  input: FederationConfigInput,
  deps: FederationDeps = {},
): Promise<FederationHandle> {
  const cfg = federationConfig(input);
  const { placement, ...siteDeps } = deps;
  if (placement && (cfg.topology !== "hub" || cfg.partitionable)) throw new PlacementUnsupportedError();
  const ids = siteIds(cfg.sites);
  mkdirSync(cfg.dataDir, { recursive: true });
  const credentials =
    deps.credentials ??
    (await provisionFederation(join(cfg.dataDir, "credentials"), Object.fromEntries(ids.map((id) => [id, []]))));
  const missing = ids.filter((id) => !credentials.sites.has(id));
  if (missing.length > 0)
    throw new CredentialsError(`the federation's credentials have no site ${missing.join(", ")}: provision them`);
  const adminOf = (id: string): NatsCredentials => siteIdentity(credentials, id).credentials;
  const parts: Parts = { servers: [], proxies: new Map(), sites: [], credentials, pids: new Map(), placement };
  try {
    if (cfg.partitionable) {
      parts.deadEnd = await LinkProxy.start({ host: "127.0.0.1", port: 1 });
      parts.deadEnd.cut();
    }
    const advertise = parts.deadEnd ? `127.0.0.1:${parts.deadEnd.port}` : undefined;
    const hub = await startHub(cfg, ids, parts, advertise);
    const urls = await startSiteServers(cfg, ids, { leafPort: hub.leafPort, advertise }, parts);
    const logs = [join(cfg.dataDir, "hub", "server.log"), ...ids.map((id) => join(cfg.dataDir, id, "server.log"))];
    await Promise.all(
      ids.map((id) =>
        waitForDomains(
          urls.get(id)!,
          ids.filter((d) => d !== id),
          adminOf(id),
          { logFiles: logs },
        ),
      ),
    );
    // Every origin exists before a site mirrors it: the migration logs too (see ensureEventMirrors).
    if (cfg.migrations) await Promise.all(ids.map((id) => ensureSiteLayout(urls.get(id)!, adminOf(id))));
    const { healthIntervalMs, dataDir, maxAppendBytes, migrations } = cfg;
    parts.sites = ids.map(
      (id) =>
        new Site(
          { site: id, natsUrl: urls.get(id)!, peers: ids, healthIntervalMs, dataDir, maxAppendBytes, migrations },
          { ...siteDeps, ...siteIdentity(credentials, id) },
        ),
    );
    await Promise.all(parts.sites.map((s) => s.open()));
    await Promise.all(parts.sites.map((s) => s.start()));
    // A site's start() returns once its own join is stored, not once its peers have mirrored it:
    // wait until every site sees every other one joined, or a command issued right away (moving
    // a VM to a peer, say) is refused against a view that does not know the peer yet.
    const everyoneJoined = (v: FederationView): boolean => ids.every((id) => v.sites[id]?.status === "joined");
    await Promise.all(parts.sites.map((s) => s.waitFor(everyoneJoined, JOIN_TIMEOUT_MS, "every site joined")));
    return handle(cfg, parts, urls, hub.process);
  } catch (err) {
    await stopAll(parts, siteDeps.log);
    throw err;
  }
}

/**
 * What site `id` of a federation runs as: its admin (it creates its log and mirrors), signing its
 * log with the admin's key, and folding only appends signed by a principal of the writing site
 * (the federation's trust file).
 */
export function siteIdentity(
  c: FederationCredentials,
  id: string,
): { credentials: NatsCredentials; trust: EventTrust } {
  const p = c.sites.get(id);
  if (!p) throw new UnknownSiteError(id);
  const admin = natsCredentialsOf(p, "admin");
  return {
    credentials: admin,
    trust: {
      insecure: false,
      signer: EventSigner.fromSeedFile(admin.nkeyFile),
      verifier: EventVerifier.fromTrustFile(c.trustFile),
    },
  };
}

/** A site's dwcp streams and mover registry, as `dwcp init` creates them (R1: one server per site). */
async function ensureSiteLayout(url: string, admin: NatsCredentials): Promise<void> {
  const nats = await connectNats(url, "dwcp-federation-init", undefined, {
    credentials: admin,
    waitOnFirstConnect: false,
  });
  try {
    await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
  } finally {
    await nats.nc.close();
  }
}

/** The hub server ("hub"), or the first site's leafnode port ("star", started with the sites). */
async function startHub(
  cfg: FederationConfig,
  ids: readonly string[],
  parts: Parts,
  advertise: string | undefined,
): Promise<{ leafPort: number; process?: ServerProcess }> {
  const leafPort = await freePort();
  if (cfg.topology === "star") return { leafPort };
  const dir = join(cfg.dataDir, "hub");
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const process = await spawnNatsServer({
    name: "hub",
    port,
    ...(parts.placement ? { bin: parts.placement.bin("hub") } : {}),
    config: renderHubConfig({
      port,
      leafListenPort: leafPort,
      leafListenHost: parts.placement?.hubLeafHost,
      leafAdvertise: advertise,
      sites: ids,
      requesters: parts.credentials.requesters,
      hosts: parts.credentials.hosts,
      tls: { ...parts.credentials.hub, caFile: parts.credentials.caFile },
    }),
    configFile: join(dir, "server.conf"),
    logFile: join(dir, "server.log"),
  });
  parts.servers.push(process);
  return { leafPort, process };
}

async function startSiteServers(
  cfg: FederationConfig,
  ids: string[],
  hub: { leafPort: number; advertise: string | undefined },
  parts: Parts,
): Promise<Map<string, string>> {
  const hubLeafPort = hub.leafPort;
  const urls = new Map<string, string>();
  const starHub = cfg.topology === "star" ? ids[0] : undefined;
  for (const id of ids) {
    if (id !== starHub && cfg.partitionable)
      parts.proxies.set(id, await LinkProxy.start({ host: "127.0.0.1", port: hubLeafPort }));
  }
  const spawnSite = async (id: string): Promise<void> => {
    const dir = join(cfg.dataDir, id);
    mkdirSync(join(dir, "jetstream"), { recursive: true });
    const port = await freePort();
    const proxy = parts.proxies.get(id);
    const hubHost = parts.placement?.hubLeafHost ?? "127.0.0.1";
    const server = await spawnNatsServer({
      name: `site ${id}`,
      port,
      ...(parts.placement ? { bin: parts.placement.bin(id) } : {}),
      config: renderSiteConfig({
        site: id,
        sites: ids,
        requesters: parts.credentials.requesters,
        hosts: parts.credentials.hosts,
        credentials: parts.credentials.sites.get(id)!,
        port,
        storeDir: join(dir, "jetstream"),
        remotes: id === starHub ? [] : [`nats-leaf://${hubHost}:${proxy?.port ?? hubLeafPort}`],
        leafListenPort: id === starHub ? hubLeafPort : undefined,
        leafAdvertise: id === starHub ? hub.advertise : undefined,
      }),
      configFile: join(dir, "server.conf"),
      logFile: join(dir, "server.log"),
    });
    parts.servers.push(server);
    parts.pids.set(id, server.pid);
    urls.set(id, parts.placement ? await parts.placement.reach(id, port) : server.url);
  };
  // The hub of a star listens before its spokes dial, or they wait a reconnect interval.
  if (starHub !== undefined) await spawnSite(starHub);
  await Promise.all(ids.filter((id) => id !== starHub).map(spawnSite));
  return urls;
}

function handle(
  cfg: FederationConfig,
  parts: Parts,
  urls: Map<string, string>,
  hub: ServerProcess | undefined,
): FederationHandle {
  const byId = new Map(parts.sites.map((s) => [s.id, s]));
  const site = (id: string): Site => {
    const s = byId.get(id);
    if (!s) throw new UnknownSiteError(id);
    return s;
  };
  /** The links a partition of `id` cuts: its own, or every link if it is the hub of a star. */
  const links = (id: string): LinkProxy[] => {
    site(id);
    if (!cfg.partitionable) throw new LinksNotCuttableError();
    const own = parts.proxies.get(id);
    return own ? [own] : [...parts.proxies.values()];
  };
  return {
    topology: cfg.topology,
    credentials: parts.credentials,
    connect: (id, role = "admin", name = `dwcp-${id}-${role}`) => {
      const p = parts.credentials.sites.get(id);
      if (!p) throw new UnknownSiteError(id);
      return connectNats(urls.get(id)!, name, undefined, {
        credentials: natsCredentialsOf(p, role),
        waitOnFirstConnect: false,
      });
    },
    sites: parts.sites.map((s) => ({ id: s.id, url: urls.get(s.id)!, pid: parts.pids.get(s.id) ?? -1, site: s })),
    hub: hub ? { url: hub.url, pid: hub.pid } : undefined,
    site,
    partition: (id) => links(id).forEach((p) => p.cut()),
    heal: (id) => links(id).forEach((p) => p.heal()),
    whenRefused: async (id, attempts) => {
      await Promise.all(links(id).map((p) => p.whenRefused(p.refused + attempts)));
    },
    stop: () => stopAll(parts),
  };
}

async function stopAll(parts: Parts, log?: Logger): Promise<void> {
  const settle = async (what: string, work: Array<Promise<void>>): Promise<void> => {
    for (const r of await Promise.allSettled(work))
      if (r.status === "rejected") log?.warn({ err: r.reason as unknown }, `stopping ${what} failed`);
  };
  await settle(
    "sites",
    parts.sites.map((s) => s.stop()),
  );
  await settle(
    "link proxies",
    [...parts.proxies.values(), ...(parts.deadEnd ? [parts.deadEnd] : [])].map((p) => p.close()),
  );
  await settle(
    "servers",
    parts.servers.map((s) => s.stop()),
  );
}
