import type { ReplicationEvent } from "#schemas/replication.js";
import type { Aggregate } from "#common/event-sourcing/aggregate.js";
import { decide, type DecideContext, type ReplicationCommand } from "./decide.js";
import { evolve } from "./evolve.js";
import { initialReplication, type Replication } from "./state.js";

/** One VM's replication log as the event-sourcing core runs it. */
export const replicationAggregate: Aggregate<Replication, ReplicationEvent, ReplicationCommand, DecideContext> = {
  initial: initialReplication,
  evolve,
  decide,
};
