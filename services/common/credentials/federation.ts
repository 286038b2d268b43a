import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  ensureCa,
  ensureServerCertificate,
  provision,
  readTrustFile,
  writeTrustFile,
  type Provisioned,
  type Role,
  type TrustFile,
} from "./provision.js";
import { crossSiteRequesters } from "./permissions.js";

// The credentials of a federation, kept in one directory: one CA (pki/) for every site and the
// hub, and per site its own role identities (<site>/creds, <site>/pki: admin, coordinator, cli,
// observer, the movers and replication services of its hosts, and site-<site>, the certificate
// its server dials the hub's leafnode port with). One trust.json lists every site's principals,
// so an event mirrored from another site is verified by the same rules as a local one.

export interface FederationCredentials {
  dir: string;
  caFile: string;
  /** The federation's trust file: every site's principals, each with its site. */
  trustFile: string;
  /** Each site's roles; their `trustFile` has the federation's principals. */
  sites: Map<string, Provisioned>;
  /** The hub server's certificate. */
  hub: { certFile: string; keyFile: string };
  /** The roles (of any site) that send requests to another site's domain: their replies cross links. */
  requesters: Role[];
  /** Each site's hosts. */
  hosts: Record<string, string[]>;
}

/**
 * Creates what is missing under `dir` for sites `sites` (site id -> its hosts) and returns where
 * everything is. Idempotent, like provision(): a restarted federation keeps its identities.
 * `opts.hubNames`: DNS names or addresses the sites dial the hub at, besides localhost and
 * 127.0.0.1 (its certificate names them; an existing certificate is kept as it is).
 */
export async function provisionFederation(
  dir: string,
  sites: Readonly<Record<string, readonly string[]>>,
  opts: { hubNames?: readonly string[] } = {},
): Promise<FederationCredentials> {
  const pki = join(dir, "pki");
  mkdirSync(pki, { recursive: true, mode: 0o700 });
  const { caFile, ca } = await ensureCa(pki);
  mkdirSync(join(dir, "hub"), { recursive: true, mode: 0o700 });
  const hub = await ensureServerCertificate(join(dir, "hub"), ca, opts.hubNames);
  const trust: TrustFile = { version: 1, principals: {} };
  const provisioned = new Map<string, Provisioned>();
  for (const [site, hosts] of Object.entries(sites)) {
    const p = await provision(join(dir, site), { hosts, sites: [site], caDir: pki });
    for (const [key, principal] of Object.entries(readTrustFile(p.trustFile).principals))
      trust.principals[key] = { ...principal, site };
    provisioned.set(site, p);
  }
  // The same trust file at the top and in every site's directory, which is complete on its own
  // (the CLI's --data-dir of a site).
  const trustFile = join(dir, "trust.json");
  writeTrustFile(trustFile, trust);
  for (const p of provisioned.values()) writeTrustFile(p.trustFile, trust);
  const requesters = crossSiteRequesters([...provisioned.values()].flatMap((p) => [...p.roles.keys()]));
  const hostsOf = Object.fromEntries(Object.entries(sites).map(([site, hosts]) => [site, [...hosts]]));
  return { dir, caFile, trustFile, sites: provisioned, hub, requesters, hosts: hostsOf };
}
