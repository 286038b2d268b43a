import type { Capacity, FederationEvent, SiteHealth, VmSpec } from "#schemas/federation.js";
import type { JsMsg } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { DwcpError, isRetryable } from "#common/errors.js";
import { MOVERS_BUCKET } from "#common/layout.js";
import type { Lifecycle } from "#common/lifecycle.js";
import { createLogger, type Logger } from "#common/logger.js";
import { connectNats, type Nats, type NatsCredentials } from "#common/nats.js";
import { configuredEventTrust, provenanceOf, type EventTrust } from "#common/signing.js";
import { siteConfig, type SiteConfig, type SiteConfigInput } from "../config.js";
import { federationBatch } from "../domain/federation/aggregate.js";
import type { FederationCommand } from "../domain/federation/decide.js";
import { handle } from "#common/event-sourcing/handle.js";
import { apply } from "../domain/federation/evolve.js";
import { healthOf } from "../domain/federation/health.js";
import {
  cloneView,
  emptyView,
  peersRead,
  staleness,
  type FederationView,
  type SiteFreshness,
} from "../domain/federation/state.js";
import { probeCapacity } from "../infra/capacity.js";
import {
  decodeAppend,
  ensureMirrors,
  ensureOwnStream,
  FederationLog,
  GZIP_APPEND,
  READ_ENCODINGS,
  tailStream,
  viewStreams,
  type Tail,
} from "../infra/fed-streams.js";
import { ensureEventMirrors } from "../infra/migration-mirrors.js";
import { RemoteMovers } from "#common/remote-movers.js";
import { MigrationPlacements } from "./migration-placements.js";

export type SiteLifecycle = "created" | Lifecycle;

/**
 * Why an append of site `site`'s events must not be folded, or undefined: with a verifier it must
 * be signed by a principal of that site (its log is written only there). Without one (an
 * unauthenticated bench) every append is taken.
 */
function appendRefusal(trust: EventTrust, m: JsMsg, site: string): string | undefined {
  if (trust.insecure || !trust.verifier) return undefined;
  const p = provenanceOf(trust, m.subject, m.headers, m.data);
  if (p.kind === "insecure") return undefined;
  if (p.kind === "unverified") return `unverified: ${p.reason}`;
  return p.principal.site === site ? undefined : `signed by ${p.principal.role} of ${p.principal.site ?? "no site"}`;
}

/** The view did not reach the awaited condition in time. */
export class FederationTimeoutError extends DwcpError {
  readonly code = "FEDERATION_TIMEOUT" as const;
  readonly retryable = true;
  constructor(
    readonly site: string,
    readonly timeoutMs: number,
    what: string,
  ) {
    super(
      `site ${site}: ${what} not reached within ${timeoutMs} ms; check the leafnode links (dwcp federation status)`,
    );
  }
}

/** A command reached a site that is not connected (before start() or after stop()). */
export class SiteNotOpenError extends DwcpError {
  readonly code = "SITE_NOT_OPEN" as const;
  readonly retryable = false;
  constructor(readonly site: string) {
    super(`site ${site} is not open; call start() first`);
  }
}

export interface SiteDeps {
  log?: Logger;
  /** Capacity figures for join and health reports. Default: this machine (see probeCapacity). */
  capacity?: () => Promise<Capacity> | Capacity;
  clock?: () => Date;
  /**
   * What the site connects to its server with (the site's admin: it creates its log and mirrors).
   * Default: the process's connect defaults (see setProcessConnectDefaults).
   */
  credentials?: NatsCredentials;
  /**
   * How the site signs its log and checks what it folds: with a verifier, an event is folded only
   * when signed by a principal of the site that wrote it (the federation's trust file names each
   * key's site); a forged append in a log or a mirror is skipped. Default: the process's event
   * trust when its environment configures one (configuredEventTrust), else none.
   */
  trust?: EventTrust;
}

export interface SiteSnapshot {
  site: string;
  view: FederationView;
  freshness: SiteFreshness[];
}

/**
 * One site of the federation: owns its log FED_<site> (the only writer), mirrors every peer's log
 * as FEDM_<peer>, folds all of them into a view, and reports its health every interval.
 * Commands run one at a time: decide on the view, append, fold the acknowledged events at once
 * (the sourced copies that follow are recognised by seq and change nothing).
 */
export class Site {
  readonly id: string;
  readonly cfg: Readonly<SiteConfig>;
  private readonly log: Logger;
  private readonly clock: () => Date;
  private readonly capacity: () => Promise<Capacity> | Capacity;
  private readonly credentials: NatsCredentials | undefined;
  private readonly trust: EventTrust;
  private nats: Nats | undefined;
  private fedLog: FederationLog | undefined;
  private tails: Tail[] = [];
  private placements: MigrationPlacements | undefined;
  private current: FederationView = emptyView();
  private readonly listeners = new Set<(view: FederationView) => void>();
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private lifecycle: SiteLifecycle = "created";
  private peers: string[];

  constructor(input: SiteConfigInput, deps: SiteDeps = {}) {
    this.cfg = siteConfig(input);
    this.id = this.cfg.site;
    this.peers = [...this.cfg.peers];
    this.log = (deps.log ?? createLogger("federation")).child({ site: this.id });
    this.clock = deps.clock ?? (() => new Date());
    this.capacity = deps.capacity ?? (() => probeCapacity(this.cfg.dataDir));
    this.credentials = deps.credentials;
    this.trust = deps.trust ?? configuredEventTrust();
  }

  get state(): SiteLifecycle {
    return this.lifecycle;
  }

  /** A copy of the folded federation as this site sees it now (O(VMs): see read() for a peek). */
  get view(): FederationView {
    return cloneView(this.current);
  }

  /** Runs `fn` on the live view without copying it; `fn` must not keep or change the view. */
  read<T>(fn: (view: Readonly<FederationView>) => T): T {
    return fn(this.current);
  }

  snapshot(now = this.clock()): SiteSnapshot {
    return { site: this.id, view: this.view, freshness: staleness(this.current, now) };
  }

  /**
   * Connects and creates the site's own log, then reads it, so that the next append knows where
   * the log ends. Separate from start() so that a federation can create every log before any
   * view sources it.
   */
  async open(): Promise<void> {
    if (this.nats) return;
    this.lifecycle = "starting";
    const name = `dwcp-federation-${this.id}`;
    this.nats = await connectNats(
      this.cfg.natsUrl,
      name,
      this.log,
      this.credentials ? { credentials: this.credentials } : undefined,
    );
    await ensureOwnStream(this.nats.jsm, this.id);
    const { maxAppendBytes, appendTimeoutMs: timeoutMs } = this.cfg;
    this.fedLog = new FederationLog(this.nats.js, this.nats.jsm, this.id, (e) => this.apply(e), this.trust, {
      maxAppendBytes,
      timeoutMs,
    });
    await this.fedLog.catchUp();
  }

  /** Opens, creates the view, replays it, joins, and starts the health reports. */
  async start(opts: { join?: boolean } = {}): Promise<void> {
    try {
      await this.open();
      const { js, jsm } = this.connection();
      await ensureMirrors(jsm, this.id, this.peers);
      await this.follow(js, jsm, viewStreams(this.id, this.peers));
      if (opts.join ?? true) await this.join();
      if (this.cfg.migrations) await this.followMigrations();
      this.lifecycle = "running";
      this.scheduleHealth();
      this.log.info({ peers: this.peers }, "site running");
    } catch (err) {
      this.lifecycle = "failed";
      throw err;
    }
  }

  /** Mirrors and follows more peers (sites that joined the federation later). */
  async addPeers(peers: readonly string[]): Promise<void> {
    const added = [...new Set(peers)].filter((p) => p !== this.id && !this.peers.includes(p));
    const { js, jsm } = this.connection();
    await ensureMirrors(jsm, this.id, added);
    if (this.cfg.migrations) await ensureEventMirrors(jsm, this.id, added);
    await this.follow(js, jsm, viewStreams(this.id, added).slice(1));
    this.peers.push(...added);
  }

  async join(): Promise<FederationEvent[]> {
    const capacity = await this.capacity();
    const { endpoint, region, healthIntervalMs: reportIntervalMs } = this.cfg;
    return this.execute([
      {
        type: "JoinSite",
        health: healthOf(capacity),
        capacity,
        reportIntervalMs,
        appendEncodings: [...READ_ENCODINGS],
        endpoint: endpoint ?? this.cfg.natsUrl,
        region,
      },
    ]);
  }

  /** Reports health now; by default judged from the capacity figures (see healthOf). */
  async reportHealth(health?: SiteHealth): Promise<FederationEvent[]> {
    const capacity = await this.capacity();
    return this.execute([
      {
        type: "ReportHealth",
        health: health ?? healthOf(capacity),
        capacity,
        reportIntervalMs: this.cfg.healthIntervalMs,
        appendEncodings: [...READ_ENCODINGS],
      },
    ]);
  }

  async leave(reason: string): Promise<FederationEvent[]> {
    return this.execute([{ type: "LeaveSite", reason }]);
  }

  async placeVm(
    vm: string,
    opts: { host?: string; spec?: VmSpec; labels?: Record<string, string> } = {},
  ): Promise<FederationEvent[]> {
    return this.execute([{ type: "PlaceVm", vm, ...opts }]);
  }

  /** Hook for cross-site migration: record that `vm` now runs at site `to`. */
  async moveVm(vm: string, to: string, opts: { host?: string; migrationId?: string } = {}): Promise<FederationEvent[]> {
    return this.execute([{ type: "MoveVm", vm, to, ...opts }]);
  }

  async removeVm(vm: string): Promise<FederationEvent[]> {
    return this.execute([{ type: "RemoveVm", vm }]);
  }

  /**
   * Decides every command in order against the view, appends all resulting events in one
   * pipelined batch and folds them. A lost race (another writer for this site) or a transport
   * failure re-reads the log and re-decides, up to `appendAttempts` times; commands whose effect
   * was already stored then decide to nothing.
   */
  async execute(commands: readonly FederationCommand[]): Promise<FederationEvent[]> {
    return this.serial(async () => {
      const fedLog = this.appendLog();
      const { events } = await handle(
        federationBatch,
        {
          load: async () => {
            if (!fedLog.isCurrent) await fedLog.catchUp();
            return { state: this.current, seq: 0 }; // the log tracks its own end (FederationLog)
          },
          append: async (_id, events) => {
            try {
              await fedLog.append(events, { gzip: peersRead(this.current, this.peers, GZIP_APPEND) });
            } catch (err) {
              await this.recover(fedLog, err);
              throw err;
            }
            for (const e of events) this.apply(e);
            return 0;
          },
        },
        { id: this.id, command: commands, msgIdBase: "", context: () => ({ now: this.clock(), site: this.id }) },
        {
          maxAttempts: this.cfg.appendAttempts,
          retryOn: isRetryable,
          onConflict: (attempt, err) => this.log.warn({ err, attempt }, "append failed; re-deciding"),
        },
      );
      return events;
    });
  }

  /**
   * Calls `listener` after every change of the view with the live view: read it during the call,
   * do not keep or change it (take `site.view` for a copy). Returns the unsubscribe function.
   */
  onChange(listener: (view: FederationView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves once `predicate` holds on the view (checked on every change, no polling). */
  async waitFor(predicate: (view: FederationView) => boolean, timeoutMs = 30_000, what = "condition"): Promise<void> {
    if (predicate(this.current)) return;
    return new Promise((resolve, reject) => {
      const off = this.onChange((view) => {
        if (!predicate(view)) return;
        clearTimeout(timer);
        off();
        resolve();
      });
      const timer = setTimeout(() => {
        off();
        reject(new FederationTimeoutError(this.id, timeoutMs, what));
      }, timeoutMs);
    });
  }

  /** Stops reporting and tailing and closes the connection; the site's log stays as it is. */
  async stop(): Promise<void> {
    if (this.lifecycle === "stopped") return;
    this.lifecycle = "draining";
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.placements?.stop();
    this.placements = undefined;
    await this.queue.catch(() => undefined);
    await Promise.allSettled(this.tails.map((t) => t.stop()));
    this.tails = [];
    await this.nats?.nc.drain().catch(() => undefined);
    this.nats = undefined;
    this.lifecycle = "stopped";
  }

  /**
   * Tails each stream (own log, peer mirrors) and folds what arrives; resolves once each has
   * delivered what it held at the start. The streams interleave arbitrarily: the fold allows it.
   */
  private async follow(js: Nats["js"], jsm: Nats["jsm"], streams: readonly string[]): Promise<void> {
    const tails = await Promise.all(
      streams.map((stream) =>
        tailStream(js, jsm, stream, (m) => {
          const events = decodeAppend(m.data);
          const where = { stream, streamSeq: m.seq, subject: m.subject };
          if (!events) return this.log.warn(where, "invalid federation event skipped");
          const refused = appendRefusal(this.trust, m, events[0]?.site ?? "");
          if (refused !== undefined)
            return this.log.warn({ ...where, refused }, "federation append not believed; skipped");
          for (const e of events) this.apply(e);
        }),
      ),
    );
    this.tails.push(...tails);
    await Promise.all(tails.map((t) => t.caughtUp));
  }

  /**
   * Mirrors every peer's migration events here and records the cross-site migrations this
   * site's coordinators complete (see MigrationPlacements). After the view has caught up, so
   * that replayed completions find their earlier records.
   */
  private async followMigrations(): Promise<void> {
    const nats = this.connection();
    await ensureEventMirrors(nats.jsm, this.id, this.peers);
    const movers = await new Kvm(nats.nc).open(MOVERS_BUCKET);
    const placements = new MigrationPlacements(nats, this, movers, new RemoteMovers(nats.nc), this.log, this.trust);
    await placements.start();
    this.placements = placements;
  }

  /** After a failed append: learn what the log holds now, whoever wrote it. */
  private async recover(fedLog: FederationLog, cause: unknown): Promise<void> {
    try {
      await fedLog.catchUp();
    } catch (err) {
      this.log.error({ err }, "re-reading the site's log failed");
      throw cause;
    }
  }

  /** Folds in place: a copy per event would make every event cost as much as the whole view. */
  private apply(event: FederationEvent): void {
    if (!apply(this.current, event)) return;
    for (const l of this.listeners) l(this.current);
  }

  private scheduleHealth(): void {
    if (this.cfg.healthIntervalMs === 0 || this.lifecycle !== "running") return;
    this.timer = setTimeout(() => {
      this.reportHealth().then(
        () => this.scheduleHealth(),
        (err: unknown) => {
          this.log.error({ err }, "health report failed");
          this.scheduleHealth();
        },
      );
    }, this.cfg.healthIntervalMs);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private connection(): Nats {
    if (!this.nats) throw new SiteNotOpenError(this.id);
    return this.nats;
  }

  private appendLog(): FederationLog {
    if (!this.nats || !this.fedLog) throw new SiteNotOpenError(this.id);
    return this.fedLog;
  }
}
