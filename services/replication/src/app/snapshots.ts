import type { Nats } from "#common/nats.js";
import type { Replication } from "../domain/replication/state.js";
import { ReplicationLog } from "../infra/replication-log.js";

/** A VM's replication (its committed snapshots) folded from the log as of now; read-only. */
export async function readReplication(nats: Nats, vm: string): Promise<Replication> {
  return (await new ReplicationLog(nats).read(vm)).state;
}
