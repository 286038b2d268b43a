// nats-server configuration files for a federation. NATS config syntax accepts JSON, so a config
// is a plain object rendered with JSON.stringify: no quoting rules to get wrong.

/** Subjects no leafnode link carries: only the owning site may write its federation log. */
export const FEDERATION_DENY = ["dwcp.fed.>"];

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
    leafnodes["remotes"] = c.remotes.map((url) => ({ url, deny_imports: FEDERATION_DENY, deny_exports: FEDERATION_DENY }));
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
