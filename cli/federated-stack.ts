import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "#common/errors.js";
import type { Logger } from "#common/logger.js";
import { startFederation, type FederationHandle } from "#federation";
import { provisionFederation } from "#common/credentials/federation.js";
import { sharedSecret, Stack } from "./stack.js";

export interface FederatedStackOptions {
  dataDir: string;
  /** The hosts of each site, e.g. `{ east: ["e1"], west: ["w1"] }`; host ids are unique across sites. */
  sites: Record<string, string[]>;
  /** Route leafnode links through relays that partition()/heal() can cut. Default true. */
  partitionable?: boolean;
  /** Health report interval of every site in ms; 0: none. Default 5000. */
  healthIntervalMs?: number;
  /** Extra environment for the coordinators and movers. */
  env?: NodeJS.ProcessEnv;
}

export interface FederatedStack {
  fed: FederationHandle;
  /** Each site's coordinator and movers, running on that site's own nats-server. */
  stacks: Map<string, Stack>;
  stack(site: string): Stack;
  stop(): Promise<void>;
}

/**
 * `dwcp up --sites`, the cross-site tests: a federation (one nats-server and JetStream domain per
 * site, leafnodes to a hub, one Site per server recording cross-site migrations), and at every
 * site a coordinator and movers as real processes, with roots under <dataDir>/<site>/stack, each
 * with its site's role credentials (<dataDir>/credentials/<site>, see provisionFederation). All
 * movers share one secret (<dataDir>/secret), since a source mover authenticates to the
 * destination mover of another site.
 */
export async function startFederatedStack(opts: FederatedStackOptions, log?: Logger): Promise<FederatedStack> {
  const hosts = Object.values(opts.sites).flat();
  const twice = hosts.filter((h, i) => hosts.indexOf(h) !== i);
  if (twice.length > 0)
    throw new ConfigError([`host ids must be unique across sites; repeated: ${[...new Set(twice)].join(", ")}`]);
  mkdirSync(opts.dataDir, { recursive: true });
  const secret = sharedSecret(opts.dataDir);
  // One CA for the federation: each site's roles (its movers among them: a cross-site batch is
  // TLS between hosts of one deployment), its servers, the hub and the leafnode links.
  const credentials = await provisionFederation(join(opts.dataDir, "credentials"), opts.sites);
  const fed = await startFederation(
    {
      sites: Object.keys(opts.sites),
      dataDir: opts.dataDir,
      partitionable: opts.partitionable ?? true,
      healthIntervalMs: opts.healthIntervalMs,
      migrations: true,
    },
    { log, credentials },
  );
  const stacks = new Map<string, Stack>();
  const stop = async (): Promise<void> => {
    await Promise.allSettled([...stacks.values()].map((s) => s.stop()));
    await fed.stop();
  };
  try {
    await Promise.all(
      fed.sites.map(async (s) => {
        const stack = new Stack({
          dataDir: join(opts.dataDir, s.id, "stack"),
          hosts: opts.sites[s.id] ?? [],
          natsUrl: s.url,
          secret,
          env: opts.env,
          credentials: credentials.sites.get(s.id),
        });
        stacks.set(s.id, stack);
        await stack.start();
      }),
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    fed,
    stacks,
    stack: (site) => {
      const s = stacks.get(site);
      if (!s) throw new ConfigError([`no site ${site} in this federation`]);
      return s;
    },
    stop,
  };
}
