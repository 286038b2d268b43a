import type { KV } from "@nats-io/kv";
import { RecordVmMigration } from "#schemas/federation.js";
import type { MigrationEvent } from "#schemas/index.js";
import { DwcpError, errorCode, isRetryable } from "#common/errors.js";
import { EventStore, aggregateOf } from "#common/event-store.js";
import { subjects } from "#common/layout.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import { INSECURE, type EventTrust } from "#common/signing.js";
import { migrationRecorded, type FederationCommand } from "../domain/federation/decide.js";
import { UnknownSiteError } from "../domain/federation/errors.js";
import type { FederationView } from "../domain/federation/state.js";
import type { RemoteMovers } from "#common/remote-movers.js";

/** What the recorder needs of its Site. */
export interface PlacementSite {
  readonly id: string;
  read<T>(fn: (view: Readonly<FederationView>) => T): T;
  execute(commands: readonly FederationCommand[]): Promise<unknown>;
}

/** A completed migration whose placement is still to be recorded. */
interface Completed {
  migrationId: string;
  vm: string;
  destHost: string;
  completedAt: string;
}

const RETRY_MS = 2_000;
/** About a minute of retries: long enough for a mirror to catch up or a link to come back. */
const MAX_ATTEMPTS = 30;
const ENDED = new Set<MigrationEvent["type"]>(["MigrationFailed", "MigrationCancelled", "MigrationRejected"]);

/** No site answered for the destination host (unreachable, or it is registered nowhere now). */
export class DestinationSiteUnknownError extends DwcpError {
  readonly code = "DESTINATION_SITE_UNKNOWN" as const;
  readonly retryable = true;
  constructor(
    readonly host: string,
    readonly unreachable: readonly string[],
  ) {
    super(
      unreachable.length > 0
        ? `host ${host} is not registered here and site(s) ${unreachable.join(", ")} did not answer; ` +
            "check the leafnode links"
        : `host ${host} is registered at no site of the federation`,
    );
  }
}

/**
 * Records in the federation the cross-site migrations that this site's coordinators complete.
 * The coordinator of the source site owns a migration and writes its events to the site's own
 * log; this recorder tails that log and, for each MigrationCompleted whose destination host is
 * registered at another site, has the Site decide RecordVmMigration (a VmMoved claimed at the
 * completion time). Replaying the log after a restart records nothing twice: decide finds the
 * earlier claim. Placement is the federation's business, so the coordinator does not know
 * about it; a migration within one site leaves the view alone.
 */
export class MigrationPlacements {
  private readonly requested = new Map<string, { vm: string; destHost: string }>();
  private queue: Promise<void> = Promise.resolve();
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopTail?: () => void;
  private stopped = false;

  constructor(
    private readonly nats: Nats,
    private readonly site: PlacementSite,
    private readonly localMovers: KV,
    private readonly remote: Pick<RemoteMovers, "find">,
    private readonly log: Logger,
    private readonly trust: EventTrust = INSECURE,
  ) {}

  /** Follows the site's migration log from its beginning; resolves once the tail runs. */
  async start(): Promise<void> {
    const tail = await new EventStore(this.nats.js, this.nats.jsm, { trust: this.trust }).tail({
      filter: subjects.migrationEvents,
      onEvent: (e) => {
        // Only a coordinator's decisions say a migration was requested or completed.
        const p = e.provenance;
        if (p?.kind === "insecure" || (p?.kind === "signed" && p.principal.role === "coordinator"))
          this.onEvent(aggregateOf(e.subject), e.event);
      },
      onInvalid: (seq, err) => this.log.warn({ streamSeq: seq, err }, "migration event failed validation; skipped"),
    });
    this.stopTail = () => tail.stop();
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.stopTail?.();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    return this.queue;
  }

  private onEvent(id: string, event: MigrationEvent): void {
    if (event.type === "MigrationRequested") {
      this.requested.set(id, { vm: event.vm, destHost: event.destination.host });
    } else if (event.type === "MigrationCompleted") {
      const req = this.requested.get(id);
      this.requested.delete(id);
      if (req) this.enqueue({ migrationId: id, vm: req.vm, destHost: req.destHost, completedAt: event.at }, 1);
    } else if (ENDED.has(event.type)) {
      this.requested.delete(id);
    }
  }

  /** One record at a time, in log order: they are appends to the same federation log. */
  private enqueue(c: Completed, attempt: number): void {
    this.queue = this.queue.then(() => this.record(c, attempt));
  }

  private async record(c: Completed, attempt: number): Promise<void> {
    if (this.stopped) return;
    const log = this.log.child({ migrationId: c.migrationId, vm: c.vm });
    try {
      // Replayed history: nothing to ask anyone.
      if (this.site.read((v) => migrationRecorded(v, c.vm, c.completedAt))) return;
      const to = await this.siteOf(c.destHost);
      if (to === this.site.id) return;
      const command = RecordVmMigration.safeParse({
        type: "RecordVmMigration",
        version: 1,
        vm: c.vm,
        migrationId: c.migrationId,
        to,
        host: c.destHost,
        completedAt: c.completedAt,
      });
      if (!command.success) {
        log.warn(
          { issues: command.error.issues.slice(0, 3) },
          "VM name is not a federation id; placement not recorded",
        );
        return;
      }
      await this.site.execute([command.data]);
      log.info({ to, host: c.destHost }, "cross-site migration recorded in the federation");
    } catch (err) {
      // The destination site may not be in this site's view yet (its mirror lags): also retry.
      const again = isRetryable(err) || err instanceof UnknownSiteError;
      if (again && attempt < MAX_ATTEMPTS) {
        log.debug({ err, attempt }, "placement not recorded yet; retrying");
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          this.enqueue(c, attempt + 1);
        }, RETRY_MS);
        this.timers.add(timer);
        return;
      }
      log.warn({ err, code: errorCode(err), attempt }, "placement of a completed cross-site migration not recorded");
    }
  }

  /** The site whose movers registered `host`: this one, a peer, or an error to retry. */
  private async siteOf(host: string): Promise<string> {
    const local = await this.localMovers.get(host);
    if (local && local.operation === "PUT" && local.length > 0) return this.site.id;
    const remote = await this.remote.find(host);
    if (remote.found) return remote.site;
    throw new DestinationSiteUnknownError(host, remote.unreachable);
  }
}
