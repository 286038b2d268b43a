import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { FederationEvent } from "#schemas/federation.js";
import { DwcpError } from "#common/errors.js";
import { connectNats, type NatsCredentials } from "#common/nats.js";
import { fold } from "../domain/federation/evolve.js";
import { placements, staleness, type FederationView, type SiteRecord } from "../domain/federation/state.js";
import { decodeAppend, fedNames, mirroredPeers, readStream, viewStreams } from "../infra/fed-streams.js";

/** The server answered, but it is not a federation site (no JetStream domain or no own log). */
export class NotAFederationSiteError extends DwcpError {
  readonly code = "NOT_A_FEDERATION_SITE" as const;
  readonly retryable = false;
  constructor(
    readonly url: string,
    why: string,
  ) {
    super(
      `${url} is not a dwcp federation site (${why}); ` +
        "pass the URL of a site's nats-server, as printed by `dwcp up --sites N`",
    );
  }
}

/** Nothing answered at the URL. */
export class SiteUnreachableError extends DwcpError {
  readonly code = "SITE_UNREACHABLE" as const;
  readonly retryable = true;
  constructor(
    readonly url: string,
    options: { cause: unknown },
  ) {
    super(
      `cannot connect to ${url}: ${String(options.cause)}; is the site's nats-server running (dwcp up --sites N)?`,
      options,
    );
  }
}

/** How the answering site's mirror of a peer's log is doing. */
export interface LinkStatus {
  /** Events the origin has that the mirror does not (as of the mirror's last contact). */
  lagEvents: number;
  /** Milliseconds since the mirror last heard from the origin. */
  lastContactMs: number;
}

export interface SiteRow extends Omit<SiteRecord, "lastSeq"> {
  /** Position of the latest event seen from the site. */
  events: number;
  ageMs: number;
  stale: boolean;
  staleAfterMs: number;
  link?: LinkStatus;
}

export interface StatusReport {
  /** The site that answered: the view is as it sees it. */
  site: string;
  generatedAt: string;
  sites: SiteRow[];
  vms: Array<{ vm: string; site: string; host?: string; since: string; by: string; migrationId?: string }>;
}

/**
 * `dwcp federation status`: connects to one site's nats-server, folds its own log and its mirrors
 * of every peer's, and returns what to print: text for people or one JSON object (--json).
 */
export async function federationStatus(
  natsUrl: string,
  opts: { json: boolean; now?: Date; credentials?: NatsCredentials },
): Promise<string> {
  let nc: NatsConnection;
  try {
    // The process's connect defaults (the CLI's credentials) unless the caller names its own.
    const how = opts.credentials ? { credentials: opts.credentials, waitOnFirstConnect: false } : undefined;
    nc = (await connectNats(natsUrl, "dwcp-federation-status", undefined, how)).nc;
  } catch (cause) {
    throw new SiteUnreachableError(natsUrl, { cause });
  }
  try {
    const jsm = await jetstreamManager(nc, { timeout: 5_000 });
    const site = (await jsm.getAccountInfo()).domain;
    if (!site) throw new NotAFederationSiteError(natsUrl, "its JetStream has no domain");
    const peers = await mirroredPeers(jsm);
    const events: FederationEvent[] = [];
    const js = jetstream(nc, { timeout: 5_000 });
    for (const stream of viewStreams(site, peers)) {
      await readStream(js, jsm, stream, 1, (m) => {
        events.push(...(decodeAppend(m.data) ?? []));
      }).catch((err: unknown) => {
        if (stream === fedNames.stream(site))
          throw new NotAFederationSiteError(natsUrl, `no stream ${stream}: ${String(err)}`);
        throw err;
      });
    }
    const report = buildReport(site, fold(events), await links(jsm, peers), opts.now ?? new Date());
    return opts.json ? JSON.stringify(report) : renderStatus(report);
  } finally {
    await nc.close();
  }
}

async function links(jsm: JetStreamManager, peers: readonly string[]): Promise<Map<string, LinkStatus>> {
  const out = new Map<string, LinkStatus>();
  for (const peer of peers) {
    const info = await jsm.streams.info(fedNames.mirror(peer));
    // `active` is in nanoseconds; -1 (or absent) when the mirror never made contact.
    const active = info.mirror?.active ?? -1;
    out.set(peer, { lagEvents: info.mirror?.lag ?? 0, lastContactMs: active < 0 ? -1 : Math.round(active / 1e6) });
  }
  return out;
}

/** Pure: the report for `view` as site `self` sees it at `now`. */
export function buildReport(
  self: string,
  view: FederationView,
  linkStatus: ReadonlyMap<string, LinkStatus>,
  now: Date,
): StatusReport {
  const fresh = new Map(staleness(view, now).map((f) => [f.site, f]));
  const sites = Object.values(view.sites)
    .sort((a, b) => (a.site < b.site ? -1 : 1))
    .map(({ lastSeq, ...r }): SiteRow => {
      const f = fresh.get(r.site);
      const link = linkStatus.get(r.site);
      return {
        ...r,
        events: lastSeq,
        ageMs: f?.ageMs ?? 0,
        stale: f?.stale ?? false,
        staleAfterMs: f?.staleAfterMs ?? 0,
        ...(link ? { link } : {}),
      };
    });
  const vms = placements(view).map((p) => ({
    vm: p.vm,
    site: p.site,
    ...(p.host !== undefined ? { host: p.host } : {}),
    since: p.at,
    by: p.by,
    ...(p.migrationId !== undefined ? { migrationId: p.migrationId } : {}),
  }));
  return { site: self, generatedAt: now.toISOString(), sites, vms };
}

const GiB = 2 ** 30;
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

/** Pure: the report as aligned text tables. */
export function renderStatus(r: StatusReport): string {
  const siteRows = r.sites.map((s) => [
    s.site + (s.site === r.site ? " (this)" : ""),
    s.status,
    s.health,
    s.capacity ? `${s.capacity.vcpus.free}/${s.capacity.vcpus.total}` : "-",
    s.capacity
      ? `${(s.capacity.memoryBytes.free / GiB).toFixed(1)}/${(s.capacity.memoryBytes.total / GiB).toFixed(1)}`
      : "-",
    s.capacity
      ? `${(s.capacity.diskBytes.free / GiB).toFixed(0)}/${(s.capacity.diskBytes.total / GiB).toFixed(0)}`
      : "-",
    `${seconds(s.ageMs)} ago${s.stale ? " STALE" : ""}`,
    s.link
      ? `lag ${s.link.lagEvents}, contact ` +
        (s.link.lastContactMs < 0 ? "never" : `${seconds(s.link.lastContactMs)} ago`)
      : "local",
    String(s.events) + (s.missing > 0 ? ` (${s.missing} missing)` : ""),
  ]);
  const vmRows = r.vms.map((v) => [
    v.vm,
    v.site,
    v.host ?? "-",
    v.since,
    v.by + (v.migrationId ? ` (${v.migrationId})` : ""),
  ]);
  return [
    `federation as seen from site ${r.site} at ${r.generatedAt}: ${r.sites.length} sites, ${r.vms.length} VMs`,
    "",
    table(
      [
        "SITE",
        "STATUS",
        "HEALTH",
        "VCPU free/total",
        "MEM GiB free/total",
        "DISK GiB free/total",
        "LAST EVENT",
        "LINK",
        "EVENTS",
      ],
      siteRows,
    ),
    "",
    r.vms.length > 0 ? table(["VM", "SITE", "HOST", "SINCE", "BY"], vmRows) : "no VMs placed",
  ].join("\n");
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}
