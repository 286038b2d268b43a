import type { FederationEvent } from "#schemas/federation.js";
import type { Aggregate } from "#common/event-sourcing/aggregate.js";
import { decide, type DecideContext, type FederationCommand } from "./decide.js";
import { evolve } from "./evolve.js";
import { emptyView, type FederationView } from "./state.js";

/**
 * The federation as the event-sourcing core sees it: one view folded from every site's log,
 * decided on by one site for its own log (the id is the deciding site's; the view is shared).
 */
export const federationAggregate: Aggregate<FederationView, FederationEvent, FederationCommand, DecideContext> = {
  initial: () => emptyView(),
  evolve,
  decide,
};
