import { randomUUID } from "node:crypto";
import type { KV, KvEntry } from "@nats-io/kv";
import { MoverRegistration } from "#schemas/index.js";
import { isWrongLastSequence } from "#common/event-sourcing/jetstream-errors.js";
import type { Logger } from "#common/logger.js";
import { retryTransient } from "#common/nats.js";
import type { RemoteMovers } from "#common/remote-movers.js";
import { HostLeaseHeldError } from "../errors.js";

/** How often the lease holder renews its entry, and how long an unrenewed entry stays live. */
export interface LeaseTiming {
  heartbeatMs: number;
  /** An entry not renewed for this long is expired: another process may take the host over. */
  ttlMs: number;
}

/** Three missed heartbeats end a lease. */
export const DEFAULT_LEASE: LeaseTiming = { heartbeatMs: 5_000, ttlMs: 15_000 };

/** Claims made in a row when racing claimants keep moving the revision under us. */
const CLAIM_TRIES = 3;

type Claim = { held: true } | { held: false; holder: MoverRegistration; ageMs: number };

/**
 * This mover's entry in the dwcp_movers bucket, and peers' lookups.
 *
 * The entry of a host is a lease: the process that holds it is the one peers reach at its data
 * address (and whose fence table guards that host's destination files). It is taken with a
 * revision check (`create` when there is no live entry, `update(key, value, revision)` over an
 * expired one, so of two racing claimants only one wins), renewed every heartbeat with
 * `update(..., lastRevision)`, and on a clean stop deleted only if still ours, so a successor
 * claims it at once. An entry whose last write is older than the TTL is expired (the server's
 * timestamp of that write against this host's clock: the hosts keep time with NTP).
 *
 * Several processes may serve one host's work queue (active/standby: fencing decides which
 * delivery of a batch may write), but only the lease holder is advertised. A mover started as
 * the active one refuses to start while another process holds a live lease (HostLeaseHeldError);
 * a standby (`--standby`) starts anyway and takes the lease over once it expires or is released.
 * A holder whose renewal finds the revision moved (it stalled past the TTL and another process
 * took the lease) has lost it: it logs so, never writes over the new holder, and carries on as
 * a standby, which keeps it useful to the shared queue without two processes advertising.
 * The revision also moves under a holder that wrote it itself: a renewal sent while the
 * connection was cut times out, yet is applied when the connection comes back. Every write
 * carries this process's `instance` id, so an entry bearing it is ours whatever its revision,
 * and is re-adopted rather than taken for a takeover.
 */
export class Registry {
  private timer?: NodeJS.Timeout;
  private readonly startedAt = new Date().toISOString();
  /** Marks our writes: pid and start time are not unique (containers, several registries in tests). */
  private readonly instance = randomUUID();
  /** The revision of our entry while we hold the lease. */
  private revision?: number;
  private ticking?: Promise<void>;
  private dataAddress = "";

  constructor(
    private readonly kv: KV,
    private readonly host: string,
    /** Canonical roots this mover is confined to. */
    readonly roots: string[],
    private readonly log: Logger,
    /** Movers of the other sites of a federation (a destination may be there); none by default. */
    private readonly remote?: Pick<RemoteMovers, "find">,
    private readonly lease: LeaseTiming = DEFAULT_LEASE,
  ) {}

  /** Whether this process holds the host's lease (is the one peers reach). */
  get holding(): boolean {
    return this.revision !== undefined;
  }

  /**
   * Claims the host's lease and keeps it renewed. Unless `standby`, a live lease held by another
   * process refuses the start (HostLeaseHeldError); a standby waits for it to lapse.
   */
  async register(dataAddress: string, o: { standby?: boolean } = {}): Promise<void> {
    this.dataAddress = dataAddress;
    const claim = await this.claim();
    if (!claim.held && !o.standby) throw new HostLeaseHeldError(this.host, claim.holder, claim.ageMs, this.lease.ttlMs);
    if (!claim.held)
      this.log.info({ holderPid: claim.holder.pid }, "standby: another mover holds the host lease; serving its queue");
    this.timer = setInterval(() => {
      this.ticking ??= this.tick().finally(() => (this.ticking = undefined));
    }, this.lease.heartbeatMs);
  }

  /** Throws HostLeaseHeldError if another process holds a live lease on the host (reads only). */
  async refuseIfHeld(): Promise<void> {
    const { holder, ageMs } = await this.liveHolder();
    if (holder) throw new HostLeaseHeldError(this.host, holder, ageMs, this.lease.ttlMs);
  }

  /** Stops renewing and releases the lease if it is still ours. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
    const revision = this.revision;
    if (revision === undefined) return;
    this.revision = undefined;
    try {
      await this.kv.delete(this.host, { previousSeq: revision });
    } catch (err) {
      if (isWrongLastSequence(err)) this.log.warn("host lease already taken by another mover; left to it");
      else this.log.warn({ err }, "host lease not released; it expires on its own");
    }
  }

  async lookup(host: string): Promise<MoverRegistration | undefined> {
    const entry = await this.kv.get(host);
    if (entry && entry.operation === "PUT" && entry.length > 0) return MoverRegistration.safeParse(entry.json()).data;
    const remote = await this.remote?.find(host);
    return remote?.found ? remote.registration : undefined;
  }

  private value(): string {
    const value: MoverRegistration = {
      version: 1,
      host: this.host,
      dataAddress: this.dataAddress,
      pid: process.pid,
      startedAt: this.startedAt,
      heartbeatAt: new Date().toISOString(),
      instance: this.instance,
    };
    return JSON.stringify(value);
  }

  /** One heartbeat: the holder renews, a standby claims a lapsed lease. */
  private async tick(): Promise<void> {
    try {
      if (this.revision !== undefined) await this.renew(this.revision);
      else if ((await this.claim()).held) this.log.info({ dataAddress: this.dataAddress }, "took over the host lease");
    } catch (err) {
      this.log.warn({ err }, "host lease heartbeat not written");
    }
  }

  private async renew(revision: number): Promise<void> {
    const value = this.value();
    try {
      this.revision = await this.kv.update(this.host, value, revision);
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
      const entry = await this.kv.get(this.host);
      const holder = parse(entry);
      if (entry && holder?.instance === this.instance) {
        // A renewal (or claim) of ours was stored though its answer was lost: carry on from it.
        this.revision = entry.revision;
        this.revision = await this.kv.update(this.host, value, entry.revision);
        this.log.info({ revision: this.revision }, "host lease: re-adopted our own renewal stored after its timeout");
        return;
      }
      // Someone else wrote after our last renewal: the lease lapsed (we stalled past its TTL) and
      // was taken. Never write over the new holder.
      this.revision = undefined;
      this.log.error(
        { holderPid: holder?.pid, holderDataAddress: holder?.dataAddress, holderStartedAt: holder?.startedAt },
        "lost the host lease to another mover; no longer advertised, carrying on as a standby",
      );
    }
  }

  /** Takes the lease if nobody holds a live one. Racing claimants: exactly one wins. */
  private async claim(): Promise<Claim> {
    for (let i = 1; ; i++) {
      const { entry, holder, ageMs } = await this.liveHolder();
      if (holder) return { held: false, holder, ageMs };
      const value = this.value();
      try {
        // `create` also writes over a deleted or purged entry (with its revision). A write resent
        // after a timeout that was stored after all comes back as a wrong last sequence: the
        // next try finds our own entry and updates it.
        this.revision = await retryTransient(() =>
          entry && entry.operation === "PUT"
            ? this.kv.update(this.host, value, entry.revision)
            : this.kv.create(this.host, value),
        );
        return { held: true };
      } catch (err) {
        if (!isWrongLastSequence(err) || i >= CLAIM_TRIES) throw err;
      }
    }
  }

  /**
   * The host's entry, and its holder if another process renewed it within the TTL. Read through
   * transient errors: a mover starting beside a young cluster finds the bucket's leader still
   * being elected, and its start waits for it rather than failing.
   */
  private async liveHolder(): Promise<{ entry: KvEntry | null; holder?: MoverRegistration; ageMs: number }> {
    const entry = await retryTransient(() => this.kv.get(this.host));
    const holder = parse(entry);
    const ageMs = entry ? Date.now() - entry.created.getTime() : Infinity;
    // Our own claim, stored though its answer was lost, is not somebody else's lease.
    const ours = holder?.instance === this.instance;
    return holder && ageMs < this.lease.ttlMs && !ours ? { entry, holder, ageMs } : { entry, ageMs };
  }
}

/** A live registration in `entry`, if it holds one (junk counts as none: it may be taken over). */
function parse(entry: KvEntry | null): MoverRegistration | undefined {
  if (!entry || entry.operation !== "PUT" || entry.length === 0) return undefined;
  return MoverRegistration.safeParse(entry.json()).data;
}
