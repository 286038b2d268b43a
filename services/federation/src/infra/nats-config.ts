import { CredentialsError, siteRole, type Provisioned, type Role } from "#common/credentials/provision.js";
import { deploymentServerConfig, serverConfig, type TlsFiles } from "#common/credentials/server-config.js";

// nats-server configuration files for a federation: the site's users, permissions and TLS as
// credentials/server-config.ts renders them for `dwcp up`, plus a leafnodes block. NATS config
// syntax accepts JSON, so the leafnodes block is a plain object rendered with JSON.stringify.

/**
 * Subjects no leafnode link carries. A stream takes in every publish on its subjects that reaches
 * its server, and leafnodes carry interest like any other subscription, so without these a
 * command, migration event or work item published at one site would also be stored by the
 * same-named stream of every other site (probed on 2.9.10 and 2.12.15: one publish at site a,
 * one copy in DWCP_EVT at a and one at b). The server itself denies only `$JS.API.>`, `$KV.>` and
 * `$OBJ.>` between domains. What still crosses: `$JS.<domain>.API.>` (mirrors, remote mover
 * lookups), mirror deliveries and core request/reply such as `dwcp.mover.<host>.rpc`.
 * - `dwcp.fed.>`: only the owning site writes its federation log.
 * - `dwcp.cmd.>`, `dwcp.evt.>`, `dwcp.work.>`: each site's coordinators own their own commands,
 *   migration log and work queues; other sites read the log through a mirror.
 * - `$JS.EVENT.>`: advisories name streams by name and sequence; a coordinator must not act on
 *   another site's max-deliveries advisory (it would look the message up in its own stream).
 */
export const FEDERATION_DENY = ["dwcp.fed.>", "dwcp.cmd.>", "dwcp.evt.>", "dwcp.work.>", "$JS.EVENT.>"];

export interface SiteServerConfig {
  site: string;
  /** Every site of the federation (this one included). */
  sites: readonly string[];
  /** The roles whose requests cross the links (crossSiteRequesters of every site's roles). */
  requesters: readonly Role[];
  /** Each site's hosts (their movers' RPCs cross the links). */
  hosts: Readonly<Record<string, readonly string[]>>;
  port: number;
  storeDir: string;
  /** The site's credentials (its server certificate, its roles, its site-<site> certificate). */
  credentials: Provisioned;
  /** Leafnode URLs this site dials (its link to the hub); empty for the hub site of a star. */
  remotes: string[];
  /** Set when this site also accepts leafnode connections (the hub site of a star). */
  leafListenPort?: number;
  /** host:port the leafnode listener advertises instead of its own (see HubServerConfig). */
  leafAdvertise?: string;
}

export interface HubServerConfig {
  port: number;
  leafListenPort: number;
  /**
   * The address the leafnode listener binds (the hub's certificate must name it). Default
   * 127.0.0.1: a federation on one host.
   */
  leafListenHost?: string;
  /** Every site of the federation: each may dial in. */
  sites: readonly string[];
  /** The roles whose requests cross the links (crossSiteRequesters of every site's roles). */
  requesters: readonly Role[];
  /** Each site's hosts (their movers' RPCs cross the links). */
  hosts: Readonly<Record<string, readonly string[]>>;
  /** The hub's certificate and the federation's CA. */
  tls: TlsFiles;
  /**
   * host:port the hub advertises to its leafnodes instead of its own leafnode address. A site
   * adds the advertised address to its remote's URLs and, when its configured (proxied) link is
   * cut, reconnects there: around the partition. Pointing it at a dead end keeps sites on their
   * configured link; in production it is the hub's public address.
   */
  leafAdvertise?: string;
}

/** Whole seconds: 2.9 takes no sub-second leafnode reconnect interval. */
const LEAF_RECONNECT_S = 1;
/** Seconds a TLS handshake may take (2 busy cores are slow). */
const TLS_TIMEOUT_S = 5;

/**
 * A leafnode listener: TLS verified against the federation's CA, and each dialling server is the
 * user its certificate names (`verify_and_map`, see leafUser in server-config.ts).
 */
const leafListener = (
  port: number,
  tls: TlsFiles,
  advertise: string | undefined,
  host = "127.0.0.1",
): Record<string, unknown> => ({
  listen: `${host}:${port}`,
  ...(advertise !== undefined ? { advertise } : {}),
  tls: { ...tlsFiles(tls), verify_and_map: true, timeout: TLS_TIMEOUT_S },
});

const tlsFiles = (t: TlsFiles): Record<string, string> => ({
  cert_file: t.certFile,
  key_file: t.keyFile,
  ca_file: t.caFile,
});

/**
 * A site: its own JetStream domain (named after the site), its roles as nkey users with mutual
 * TLS (as `dwcp up` runs a single site), and a leafnode link to the hub over TLS, authenticated
 * by the site's `site-<site>` certificate.
 */
export function renderSiteConfig(c: SiteServerConfig): string {
  const p = c.credentials;
  const leafnodes: Record<string, unknown> = { reconnect: LEAF_RECONNECT_S };
  const serverTls = { certFile: p.server.certFile, keyFile: p.server.keyFile, caFile: p.caFile };
  if (c.leafListenPort !== undefined)
    Object.assign(leafnodes, leafListener(c.leafListenPort, serverTls, c.leafAdvertise));
  const identity = p.roles.get(siteRole(c.site));
  if (c.remotes.length > 0 && identity === undefined)
    throw new CredentialsError(`no site-${c.site} credentials: provision the federation with provisionFederation`);
  if (c.remotes.length > 0 && identity !== undefined) {
    leafnodes["remotes"] = c.remotes.map((url) => ({
      url,
      tls: {
        ...tlsFiles({ certFile: identity.certFile, keyFile: identity.keyFile, caFile: p.caFile }),
        timeout: TLS_TIMEOUT_S,
      },
      deny_imports: FEDERATION_DENY,
      deny_exports: FEDERATION_DENY,
    }));
  }
  return deploymentServerConfig(p, {
    host: "127.0.0.1",
    port: c.port,
    storeDir: c.storeDir,
    serverName: `dwcp-site-${c.site}`,
    domain: c.site,
    federation: { site: c.site, peers: c.sites.filter((s) => s !== c.site) },
    ...(c.leafListenPort !== undefined
      ? { leafnodes: { hosts: c.hosts, accept: c.sites.filter((s) => s !== c.site), requesters: c.requesters } }
      : {}),
    extra: `leafnodes: ${JSON.stringify(leafnodes, null, 2)}`,
  });
}

/**
 * The hub: a router without JetStream, so it holds no state and any site can be cut from it. It
 * takes no clients (it has no client users), only the sites' leafnode links.
 */
export function renderHubConfig(c: HubServerConfig): string {
  return serverConfig({
    host: "127.0.0.1",
    port: c.port,
    storeDir: undefined,
    serverName: "dwcp-fed-hub",
    tls: c.tls,
    users: [],
    leafnodes: { hosts: c.hosts, accept: c.sites, requesters: c.requesters },
    extra: `leafnodes: ${JSON.stringify(
      { reconnect: LEAF_RECONNECT_S, ...leafListener(c.leafListenPort, c.tls, c.leafAdvertise, c.leafListenHost) },
      null,
      2,
    )}`,
  });
}
