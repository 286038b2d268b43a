import { DwcpError } from "#common/errors.js";
import type { Nats } from "#common/nats.js";
import { vmNameProblem } from "#schemas/names.js";
import type { Replication } from "../domain/replication/state.js";
import { ReplicationLog } from "../infra/replication-log.js";

/**
 * A VM's replication (its committed snapshots) folded from the log as of now; read-only. The name
 * becomes a subject token: a wildcard (`*`, `>`) would read other VMs' logs, so it is refused.
 */
export async function readReplication(nats: Nats, vm: string): Promise<Replication> {
  const problem = vmNameProblem(vm);
  if (problem !== undefined) throw new InvalidVmNameError(problem);
  return (await new ReplicationLog(nats).read(vm)).state;
}

/** A VM name that is not 1-64 characters of A-Z a-z 0-9 _ - (e.g. a NATS wildcard). */
export class InvalidVmNameError extends DwcpError {
  readonly code = "INVALID_VM_NAME";
  readonly retryable = false;
}
