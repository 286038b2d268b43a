import { DwcpError } from "#common/errors.js";
import type { Nats } from "#common/nats.js";
import type { EventTrust } from "#common/signing.js";
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

/** An event a read did not fold: its producer may not make it (or it is not signed). */
export interface IgnoredEvent {
  seq: number;
  type: string;
  reason: string;
}

/** How many ignored events a report lists (the count is exact). */
const IGNORED_LISTED = 20;

/**
 * readReplication for a reader with its own trust (the CLI's: the stack's trust file), folding
 * only events whose producer may make them, as the replication service does; with what it
 * ignored and why.
 */
export async function readReplicationChecked(
  nats: Nats,
  vm: string,
  trust: EventTrust,
): Promise<{ state: Replication; ignored: { count: number; recent: IgnoredEvent[] } }> {
  const problem = vmNameProblem(vm);
  if (problem !== undefined) throw new InvalidVmNameError(problem);
  const ignored = { count: 0, recent: [] as IgnoredEvent[] };
  const log = new ReplicationLog(nats, {
    trust,
    onRejected: (e, reason) => {
      ignored.count++;
      ignored.recent = [...ignored.recent, { seq: e.seq, type: e.event.type, reason }].slice(-IGNORED_LISTED);
    },
  });
  return { state: (await log.read(vm)).state, ignored };
}

/** A VM name that is not 1-64 characters of A-Z a-z 0-9 _ - (e.g. a NATS wildcard). */
export class InvalidVmNameError extends DwcpError {
  readonly code = "INVALID_VM_NAME";
  readonly retryable = false;
}
