import type { Capacity, SiteHealth, VmSpec } from "#schemas/federation.js";

export type SiteStatus = "joined" | "left" | "unknown";

/** What the federation knows about one site; only that site's own events change it. */
export interface SiteRecord {
  site: string;
  /** "unknown" until the site's SiteJoined is folded (its log may have been trimmed). */
  status: SiteStatus;
  health: SiteHealth | "unknown";
  capacity?: Capacity;
  endpoint?: string;
  region?: string;
  joinedAt?: string;
  leftAt?: string;
  leftReason?: string;
  /** The writer's time of its latest event: what staleness is measured from. */
  lastSeenAt: string;
  /** Promised interval between health reports; 0: none promised. */
  reportIntervalMs: number;
  /** Encodings of log messages besides plain JSON the site reads, as its latest join or report said. */
  appendEncodings?: string[];
  /** Position of the last folded event in the site's log. */
  lastSeq: number;
  /** Events folded from this site. */
  eventCount: number;
  /** Events the fold skipped over (a sequence jumped): the log was trimmed or a copy was lost. */
  missing: number;
}

/**
 * The last word on one VM, by last-writer-wins: the claim with the latest `at`, then the
 * greater writing site id, then the greater seq. A removal is kept as a tombstone so that an
 * older placement folded later cannot bring the VM back.
 */
export interface VmRecord {
  vm: string;
  status: "placed" | "removed";
  /** Where the VM runs (for a tombstone: where it ran). */
  site: string;
  host?: string;
  spec?: VmSpec;
  labels?: Record<string, string>;
  migrationId?: string;
  /** The claim that won: its time, writer and position in the writer's log. */
  at: string;
  by: string;
  seq: number;
}

/** The folded federation: a pure function of the set of events, whatever order sites arrive in. */
export interface FederationView {
  sites: Record<string, SiteRecord>;
  vms: Record<string, VmRecord>;
}

/**
 * Maps keyed by site and VM ids have no prototype: an id such as "constructor" or "toString"
 * must find nothing rather than Object.prototype's members.
 */
const dict = <T>(from?: Record<string, T>): Record<string, T> =>
  Object.assign(Object.create(null) as Record<string, T>, from);

export const emptyView = (): FederationView => ({ sites: dict(), vms: dict() });

/** A copy whose maps can change without touching `view` (records are shared: never mutate one). O(size). */
export const cloneView = (view: FederationView): FederationView => ({ sites: dict(view.sites), vms: dict(view.vms) });

/**
 * A view layered over `base` in O(1): lookups fall through to `base`, writes stay in the layer.
 * For keyed access only (decide, apply): enumerating it sees only the layer's own entries.
 */
export const overlayView = (base: FederationView): FederationView => ({
  sites: Object.create(base.sites) as Record<string, SiteRecord>,
  vms: Object.create(base.vms) as Record<string, VmRecord>,
});

/** How long a site may be silent before it counts as stale when it promised no interval. */
export const DEFAULT_STALE_AFTER_MS = 30_000;
/** A site is stale after missing this many promised health reports. */
export const MISSED_REPORTS_STALE = 3;

/** True when claim `a` beats claim `b` (total order: time, then writer id, then seq). */
export function claimWins(a: Pick<VmRecord, "at" | "by" | "seq">, b: Pick<VmRecord, "at" | "by" | "seq">): boolean {
  const ta = Date.parse(a.at);
  const tb = Date.parse(b.at);
  if (ta !== tb) return ta > tb;
  if (a.by !== b.by) return a.by > b.by;
  return a.seq > b.seq;
}

export interface SiteFreshness {
  site: string;
  status: SiteStatus;
  /** Milliseconds since the site's latest event (by the writer's clock); negative under skew. */
  ageMs: number;
  /** Joined, and silent for longer than its promise allows. Left sites are never stale. */
  stale: boolean;
  staleAfterMs: number;
}

/** Per-site staleness at `now`, sorted by site id. */
export function staleness(
  view: FederationView,
  now: Date,
  defaultStaleAfterMs = DEFAULT_STALE_AFTER_MS,
): SiteFreshness[] {
  return Object.values(view.sites)
    .sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : 0))
    .map((s) => {
      const staleAfterMs = s.reportIntervalMs > 0 ? MISSED_REPORTS_STALE * s.reportIntervalMs : defaultStaleAfterMs;
      const ageMs = now.getTime() - Date.parse(s.lastSeenAt);
      return {
        site: s.site,
        status: s.status,
        ageMs,
        stale: s.status !== "left" && ageMs > staleAfterMs,
        staleAfterMs,
      };
    });
}

/** VMs that currently run somewhere, sorted by VM id. */
export function placements(view: FederationView): VmRecord[] {
  return Object.values(view.vms)
    .filter((v) => v.status === "placed")
    .sort((a, b) => (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0));
}

/** JSON with sorted keys: equal folds give equal strings on every site. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) out[key] = sortKeys((value as Record<string, unknown>)[key]);
  return out;
}

/**
 * Whether every one of `peers` announced that it reads log messages in `encoding` (a peer not
 * yet in the view, or one whose latest join or report did not say so, reads plain JSON only).
 */
export function peersRead(view: FederationView, peers: readonly string[], encoding: string): boolean {
  return peers.every((p) => view.sites[p]?.appendEncodings?.includes(encoding) === true);
}
