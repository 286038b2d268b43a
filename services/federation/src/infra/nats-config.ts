// nats-server configuration files for a federation. NATS config syntax accepts JSON, so a config
// is a plain object rendered with JSON.stringify: no quoting rules to get wrong.

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
  port: number;
  storeDir: string;
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
   * host:port the hub advertises to its leafnodes instead of its own leafnode address. A site
   * adds the advertised address to its remote's URLs and, when its configured (proxied) link is
   * cut, reconnects there: around the partition. Pointing it at a dead end keeps sites on their
   * configured link; in production it is the hub's public address.
   */
  leafAdvertise?: string;
}

/** Whole seconds: 2.9 takes no sub-second leafnode reconnect interval. */
const LEAF_RECONNECT_S = 1;

/** A site: its own JetStream domain (named after the site) and a leafnode link to the hub. */
export function renderSiteConfig(c: SiteServerConfig): string {
  const leafnodes: Record<string, unknown> = { reconnect: LEAF_RECONNECT_S };
  if (c.leafListenPort !== undefined) leafnodes["listen"] = `127.0.0.1:${c.leafListenPort}`;
  if (c.leafAdvertise !== undefined) leafnodes["advertise"] = c.leafAdvertise;
  if (c.remotes.length > 0) {
    leafnodes["remotes"] = c.remotes.map((url) => ({
      url,
      deny_imports: FEDERATION_DENY,
      deny_exports: FEDERATION_DENY,
    }));
  }
  return render({
    server_name: `dwcp-site-${c.site}`,
    listen: `127.0.0.1:${c.port}`,
    jetstream: { store_dir: c.storeDir, domain: c.site },
    leafnodes,
  });
}

/** The hub: a router without JetStream, so it holds no state and any site can be cut from it. */
export function renderHubConfig(c: HubServerConfig): string {
  return render({
    server_name: "dwcp-fed-hub",
    listen: `127.0.0.1:${c.port}`,
    leafnodes: { listen: `127.0.0.1:${c.leafListenPort}`, ...(c.leafAdvertise ? { advertise: c.leafAdvertise } : {}) },
  });
}

function render(config: Record<string, unknown>): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}
