import type { ReplicationEvent } from "#schemas/replication.js";

/** Who produced an event, as the reader verified it (common/signing.ts Provenance fits). */
export type Producer =
  | { kind: "signed"; principal: { role: string; host?: string } }
  | { kind: "insecure" }
  | { kind: "unverified"; reason: string };

/**
 * Why a replication event must not be folded, or undefined when its producer may make it: a
 * snapshot is committed only by the replication service of its source host (the event names the
 * store a restore reads), and pruned only by a replication service.
 */
export function replicationRefusal(event: ReplicationEvent, producer: Producer | undefined): string | undefined {
  if (producer === undefined) return "unverified: not checked";
  if (producer.kind === "insecure") return undefined;
  if (producer.kind === "unverified") return `unverified: ${producer.reason}`;
  const { role } = producer.principal;
  switch (event.type) {
    case "SnapshotCommitted":
      return role === `replication-${event.source.host}`
        ? undefined
        : `${role} may not commit snapshots of host ${event.source.host}`;
    case "SnapshotsPruned":
      return role.startsWith("replication-") ? undefined : `${role} may not prune snapshots`;
    default: {
      const never: never = event;
      return never;
    }
  }
}
