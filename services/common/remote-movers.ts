import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { MoverRegistration } from "#schemas/index.js";
import { MOVERS_BUCKET } from "./layout.js";
import { isStreamNotFound } from "./event-sourcing/jetstream-errors.js";

// Shared by the coordinator and the mover, which look movers up, and the federation, which names
// the mirror streams this lookup finds its peers by: none of them reaches into another's code.

/** A site's read-only mirror of peer `site`'s federation log is the stream `FEDM_<site>`. */
export const FED_MIRROR_PREFIX = "FEDM_";
/** A site's own federation log is `FED_<site>`. */
export const FED_STREAM_PREFIX = "FED_";
/** A site's read-only mirror of peer `site`'s migration events is `DWCP_EVTM_<site>`. */
export const EVENT_MIRROR_PREFIX = "DWCP_EVTM_";

/** The peers a site mirrors, found by listing its streams (for readers that know no config). */
export async function mirroredPeers(jsm: JetStreamManager): Promise<string[]> {
  const peers: string[] = [];
  for await (const name of jsm.streams.names()) {
    if (name.startsWith(FED_MIRROR_PREFIX)) peers.push(name.slice(FED_MIRROR_PREFIX.length));
  }
  return peers.sort();
}

/** Where a host's mover is registered in the other sites, or which sites could not be asked. */
export type RemoteLookup =
  | { found: true; site: string; registration: MoverRegistration }
  | { found: false; unreachable: string[] };

export interface RemoteMoversOptions {
  /** How long the list of peer sites is reused before it is read again, in ms. Default 5000. */
  peersTtlMs?: number;
  /** How long one peer may take to answer a lookup, in ms. Default 2000. */
  timeoutMs?: number;
}

/**
 * Finds movers registered at the other sites of a federation. Each site keeps its movers in its
 * own `dwcp_movers` bucket; another site's bucket is read through that site's JetStream domain
 * (`$JS.<site>.API.>` crosses the leafnodes, while the server itself keeps `$KV.>` within a
 * domain). The peers are the sites this site mirrors (its FEDM_<peer> streams): no extra
 * configuration, and outside a federation there are none, so a lookup is one cheap miss.
 * Host ids must be unique across the federation; a local registration always comes first.
 */
export class RemoteMovers {
  private readonly peersTtlMs: number;
  private readonly timeoutMs: number;
  private peers: { until: number; list: Promise<string[]> } | undefined;
  private readonly buckets = new Map<string, Promise<KV>>();

  constructor(
    private readonly nc: NatsConnection,
    opts: RemoteMoversOptions = {},
  ) {
    this.peersTtlMs = opts.peersTtlMs ?? 5_000;
    this.timeoutMs = opts.timeoutMs ?? 2_000;
  }

  /** Asks every peer site at once; a peer that does not answer is listed as unreachable. */
  async find(host: string): Promise<RemoteLookup> {
    const peers = await this.peerSites();
    const unreachable: string[] = [];
    const answers = await Promise.all(
      peers.map(async (site) => {
        try {
          return { site, registration: await this.lookupAt(site, host) };
        } catch {
          this.buckets.delete(site);
          unreachable.push(site);
          return { site, registration: undefined };
        }
      }),
    );
    const hit = answers.find((a) => a.registration !== undefined);
    if (hit?.registration) return { found: true, site: hit.site, registration: hit.registration };
    return { found: false, unreachable: unreachable.sort() };
  }

  private async lookupAt(site: string, host: string): Promise<MoverRegistration | undefined> {
    let bucket = this.buckets.get(site);
    if (!bucket) {
      // bind only: no round trip until the first get.
      bucket = new Kvm(jetstream(this.nc, { domain: site, timeout: this.timeoutMs })).open(MOVERS_BUCKET);
      this.buckets.set(site, bucket);
    }
    try {
      const entry = await (await bucket).get(host);
      if (!entry || entry.operation !== "PUT" || entry.length === 0) return undefined;
      return MoverRegistration.safeParse(entry.json()).data;
    } catch (err) {
      // A site without movers has no bucket: nothing registered there, not unreachable.
      if (isStreamNotFound(err)) return undefined;
      throw err;
    }
  }

  private async peerSites(): Promise<string[]> {
    const now = Date.now();
    if (!this.peers || now >= this.peers.until) {
      const list = jetstreamManager(this.nc)
        .then(mirroredPeers)
        .catch((): string[] => []);
      this.peers = { until: now + this.peersTtlMs, list };
    }
    return this.peers.list;
  }
}
