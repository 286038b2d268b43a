import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { MOVERS_BUCKET } from "#common/layout.js";
import { HostId } from "#schemas/common.js";
import { pingReplication } from "./commands.js";

export interface KnownHostOptions {
  /** How long a replication service may take to answer the ping, in milliseconds. Default 2000. */
  pingTimeoutMs?: number;
}

/**
 * Whether `host` is one of this deployment's: a mover registered it in `dwcp_movers` (`dwcp up`
 * starts one per host), or a replication service answers for it. A name neither knows would have
 * a command invent a host (a store under a root nobody serves). Never throws: an unreadable
 * bucket or a silent service counts as not knowing the host.
 */
export async function isKnownHost(nc: NatsConnection, host: string, o: KnownHostOptions = {}): Promise<boolean> {
  if (!HostId.safeParse(host).success) return false;
  try {
    const kv = await new Kvm(nc).open(MOVERS_BUCKET);
    const entry = await kv.get(host);
    if (entry && entry.operation === "PUT" && entry.length > 0) return true;
  } catch {
    // no bucket, or no right to read it: ask the replication service instead
  }
  try {
    await pingReplication(nc, host, { acceptTimeoutMs: o.pingTimeoutMs ?? 2_000 });
    return true;
  } catch {
    return false;
  }
}
