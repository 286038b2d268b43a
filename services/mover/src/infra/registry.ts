import type { KV } from "@nats-io/kv";
import { MoverRegistration } from "#schemas/index.js";
import type { Logger } from "#common/logger.js";
import type { RemoteMovers } from "#common/remote-movers.js";

import { DwcpError } from "#common/errors.js";

/** How often the holder renews its lease on the host id. */
export const HEARTBEAT_MS = 3_000;
/** A lease not renewed for this long is a dead holder's: another process may take the host id. */
export const LEASE_MS = 10_000;

/** Another live process holds this host id's lease: two movers must not serve one host. */
export class HostIdInUseError extends DwcpError {
  readonly code = "HOST_ID_IN_USE" as const;
  readonly retryable = false;
  constructor(host: string, holder: MoverRegistration | undefined) {
    super(
      `host id ${host} is held by another live mover` +
        (holder ? ` (pid ${holder.pid}, data address ${holder.dataAddress}, renewed ${holder.heartbeatAt})` : "") +
        `: stop it first, or start this one with another --host`,
    );
  }
}

/**
 * This mover's entry in the dwcp_movers bucket, a lease on its host id: claimed with a KV create
 * (or, when the previous holder stopped renewing for LEASE_MS, an update at the revision it
 * left), renewed by a heartbeat that updates at the revision it last wrote. A second process
 * claiming a live host id is refused; one whose renewal finds another writer's revision has
 * lost the lease and says so through `onLost`. Also looks peers up.
 */
export class Registry {
  private timer?: NodeJS.Timeout;
  private readonly startedAt = new Date().toISOString();
  private revision?: number;

  constructor(
    private readonly kv: KV,
    private readonly host: string,
    /** Canonical roots this mover is confined to. */
    readonly roots: string[],
    private readonly log: Logger,
    /** Movers of the other sites of a federation (a destination may be there); none by default. */
    private readonly remote?: Pick<RemoteMovers, "find">,
  ) {}

  /**
   * Claims the host id's lease (waiting up to LEASE_MS for a silent holder's to expire) and
   * renews it every HEARTBEAT_MS. Throws HostIdInUseError while another process renews it.
   */
  async register(dataAddress: string, onLost: (err: Error) => void = () => undefined): Promise<void> {
    const value = (): string => {
      const v: MoverRegistration = {
        version: 1,
        host: this.host,
        dataAddress,
        pid: process.pid,
        startedAt: this.startedAt,
        heartbeatAt: new Date().toISOString(),
      };
      return JSON.stringify(v);
    };
    this.revision = await this.claim(value);
    this.timer = setInterval(() => {
      if (this.revision === undefined) return;
      this.kv.update(this.host, value(), this.revision).then(
        (rev) => (this.revision = rev),
        async (err: unknown) => {
          if (!isWrongRevision(err)) return this.log.warn({ err }, "heartbeat not written");
          // A renewal whose acknowledgement was lost (a stream leader change) still landed: the
          // entry then holds this process's own lease at a newer revision. Only another holder's
          // entry means the lease is lost.
          const holder = await this.kv.get(this.host).catch(() => undefined);
          const reg = holder?.operation === "PUT" ? MoverRegistration.safeParse(holder.json()).data : undefined;
          if (holder && reg?.pid === process.pid && reg.startedAt === this.startedAt) {
            this.revision = holder.revision;
            return;
          }
          clearInterval(this.timer);
          this.revision = undefined;
          onLost(new HostIdInUseError(this.host, reg));
        },
      );
    }, HEARTBEAT_MS);
  }

  private async claim(value: () => string): Promise<number> {
    const deadline = Date.now() + LEASE_MS + HEARTBEAT_MS;
    let seen: { revision: number; since: number } | undefined;
    for (;;) {
      const entry = await this.kv.get(this.host);
      if (!entry || entry.operation !== "PUT" || entry.length === 0) {
        try {
          return await this.kv.create(this.host, value());
        } catch (err) {
          if (!isWrongRevision(err)) throw err;
          continue; // another claimant was first: look again
        }
      }
      // A lease not renewed (same revision) for LEASE_MS, as this process measures it, is dead.
      if (seen?.revision !== entry.revision) seen = { revision: entry.revision, since: Date.now() };
      if (Date.now() - seen.since >= LEASE_MS || Date.now() - entry.created.getTime() >= LEASE_MS) {
        try {
          return await this.kv.update(this.host, value(), entry.revision);
        } catch (err) {
          if (!isWrongRevision(err)) throw err;
          continue;
        }
      }
      if (Date.now() > deadline) throw new HostIdInUseError(this.host, MoverRegistration.safeParse(entry.json()).data);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Stops renewing and gives the lease back (deletes the entry if it is still this process's). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    const revision = this.revision;
    this.revision = undefined;
    if (revision === undefined) return;
    await this.kv
      .delete(this.host, { previousSeq: revision })
      .catch((err: unknown) => this.log.warn({ err }, "lease not released"));
  }

  async lookup(host: string): Promise<MoverRegistration | undefined> {
    const entry = await this.kv.get(host);
    if (entry && entry.operation === "PUT" && entry.length > 0) return MoverRegistration.safeParse(entry.json()).data;
    const remote = await this.remote?.find(host);
    return remote?.found ? remote.registration : undefined;
  }
}

/** JetStream's answer to a write at a stale revision (KV create of an existing key, update). */
function isWrongRevision(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; code?: number; message?: string };
  return e?.api_error?.err_code === 10071 || /wrong last sequence|key exists/i.test(e?.message ?? "");
}
