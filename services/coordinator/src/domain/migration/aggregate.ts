import type { MigrationEvent } from "#schemas/index.js";
import type { Aggregate } from "#common/event-sourcing/aggregate.js";
import { decide, type DecideContext, type MigrationCommand } from "./decide.js";
import { evolve } from "./evolve.js";
import { initialMigration, type Migration } from "./state.js";

/** The migration aggregate as the event-sourcing core runs it. */
export const migrationAggregate: Aggregate<Migration, MigrationEvent, MigrationCommand, DecideContext> = {
  initial: initialMigration,
  evolve,
  decide,
};
