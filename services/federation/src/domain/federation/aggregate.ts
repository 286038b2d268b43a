import type { FederationEvent } from "#schemas/federation.js";
import type { Aggregate } from "#common/event-sourcing/aggregate.js";
import { decide, type DecideContext, type FederationCommand } from "./decide.js";
import { apply, evolve } from "./evolve.js";
import { emptyView, overlayView, type FederationView } from "./state.js";

/**
 * The federation as the event-sourcing core sees it: one view folded from every site's log,
 * decided on by one site for its own log (the id is the deciding site's; the view is shared).
 */
export const federationAggregate: Aggregate<FederationView, FederationEvent, FederationCommand, DecideContext> = {
  initial: () => emptyView(),
  evolve,
  decide,
};

/**
 * Decides a batch of commands in order; later commands see the events of earlier ones through
 * an overlay of the view, not a copy of it.
 */
export function decideBatch(
  view: FederationView,
  commands: readonly FederationCommand[],
  ctx: DecideContext,
): FederationEvent[] {
  const scratch = overlayView(view);
  const out: FederationEvent[] = [];
  for (const command of commands) {
    const events = decide(scratch, command, ctx);
    for (const e of events) apply(scratch, e);
    out.push(...events);
  }
  return out;
}

/**
 * A site's batch of commands for the core's handle loop. No `evolve`: the site folds what it
 * appended into its live view in place (a copy of the view per event would cost O(VMs)).
 */
export const federationBatch: Pick<
  Aggregate<FederationView, FederationEvent, readonly FederationCommand[], DecideContext>,
  "decide"
> = { decide: decideBatch };
