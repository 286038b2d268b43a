import type { FederationEvent } from "#schemas/federation.js";
import { claimWins, cloneView, emptyView, type FederationView, type SiteRecord, type VmRecord } from "./state.js";

/**
 * Folds one event into a new view; `view` is left untouched. Never throws. Sites arrive
 * interleaved differently at every site, so the fold must not depend on that interleaving: a
 * site's record changes only through its own events (which arrive in log order), and VMs merge
 * by last-writer-wins, which is commutative. A copy whose seq was already folded changes nothing,
 * so a site may fold its own event when the append is acknowledged and again when it reads it
 * back from its log. Copies the top-level maps: to fold many events use fold() or apply().
 */
export function evolve(view: FederationView, event: FederationEvent): FederationView {
  const next = cloneView(view);
  return apply(next, event) ? next : view;
}

/** Folds events into a new view (one copy of `from`, then in place). */
export function fold(events: Iterable<FederationEvent>, from: FederationView = emptyView()): FederationView {
  const view = cloneView(from);
  for (const e of events) apply(view, e);
  return view;
}

/**
 * evolve() in place, for a view its caller owns: replaces records, never mutates one, so records
 * shared with earlier views stay valid. Returns whether anything changed.
 */
export function apply(view: FederationView, event: FederationEvent): boolean {
  const prev = view.sites[event.site];
  if (prev !== undefined && event.seq <= prev.lastSeq) return false;
  const site = touch(prev, event);
  switch (event.type) {
    case "SiteJoined": {
      const { health, capacity, reportIntervalMs, appendEncodings, endpoint, region, at } = event;
      const { leftAt: _l, leftReason: _r, ...rest } = site;
      setSite(view, {
        ...rest,
        status: "joined",
        health,
        capacity,
        reportIntervalMs,
        appendEncodings,
        endpoint,
        region,
        joinedAt: at,
      });
      return true;
    }
    case "SiteLeft":
      setSite(view, { ...site, status: "left", leftAt: event.at, leftReason: event.reason });
      return true;
    case "SiteHealthReported":
      setSite(view, {
        ...site,
        health: event.health,
        capacity: event.capacity,
        reportIntervalMs: event.reportIntervalMs,
        appendEncodings: event.appendEncodings,
      });
      return true;
    case "VmPlaced":
      setSite(view, site);
      claim(view, {
        vm: event.vm,
        status: "placed",
        site: event.site,
        host: event.host,
        spec: event.spec,
        labels: event.labels,
        at: event.at,
        by: event.site,
        seq: event.seq,
      });
      return true;
    case "VmMoved": {
      const { vm, to, host, spec, labels, migrationId, at } = event;
      setSite(view, site);
      claim(view, {
        vm,
        status: "placed",
        site: to,
        host,
        spec,
        labels,
        migrationId,
        at,
        by: event.site,
        seq: event.seq,
      });
      return true;
    }
    case "VmRemoved":
      setSite(view, site);
      claim(view, { vm: event.vm, status: "removed", site: event.site, at: event.at, by: event.site, seq: event.seq });
      return true;
    default: {
      const never: never = event;
      return never;
    }
  }
}

/** Bookkeeping every event does to its writer's record: position, count, gaps, last seen. */
function touch(prev: SiteRecord | undefined, event: FederationEvent): SiteRecord {
  const base: SiteRecord = prev ?? {
    site: event.site,
    status: "unknown",
    health: "unknown",
    lastSeenAt: event.at,
    reportIntervalMs: 0,
    lastSeq: 0,
    eventCount: 0,
    missing: 0,
  };
  const later = !(Date.parse(base.lastSeenAt) > Date.parse(event.at));
  return {
    ...base,
    lastSeq: event.seq,
    eventCount: base.eventCount + 1,
    missing: base.missing + (event.seq - base.lastSeq - 1),
    lastSeenAt: later ? event.at : base.lastSeenAt,
  };
}

function setSite(view: FederationView, site: SiteRecord): void {
  view.sites[site.site] = dropUndefined(site);
}

/** Last writer wins: the claim replaces the record only if it beats it. */
function claim(view: FederationView, c: VmRecord): void {
  const current = view.vms[c.vm];
  if (current === undefined || claimWins(c, current)) view.vms[c.vm] = dropUndefined(c);
}

/**
 * Optional fields absent rather than undefined, so folds compare equal however they were built.
 * Copies the defined fields instead of deleting the others (delete makes objects slow).
 */
function dropUndefined<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}
