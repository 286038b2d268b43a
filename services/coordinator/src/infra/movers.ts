import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { z } from "zod";
import { MoverRegistration, type MoverRequest } from "#schemas/index.js";
import { DwcpError } from "#common/errors.js";
import { subjects } from "#common/layout.js";
import { requestHost } from "#common/nats.js";
import { RemoteMovers } from "#common/remote-movers.js";

/** How long a found registration answers lookups without another read of the registry, ms. */
const REGISTRATION_TTL_MS = 1_000;

export class UnknownHostError extends DwcpError {
  readonly code: string = "UNKNOWN_HOST";
  readonly retryable = false;
  constructor(
    readonly host: string,
    message?: string,
  ) {
    super(message ?? `no mover has registered host "${host}"; start one with \`dwcp mover --host ${host} ...\``);
  }
}

/**
 * The source host of a migration is registered at another site of the federation. The source
 * site's coordinator owns a migration (its movers pull the work from that site's queue), so the
 * command belongs there; rejected as UNKNOWN_HOST, since no mover of this site has the host.
 */
export class SourceAtOtherSiteError extends UnknownHostError {
  override readonly code = "SOURCE_AT_OTHER_SITE";
  constructor(
    host: string,
    readonly site: string,
  ) {
    super(
      host,
      `source host "${host}" belongs to site ${site}: send the StartMigration to that site's NATS ` +
        `(its coordinator owns migrations from ${host})`,
    );
  }
}

export class HostUnreachableError extends DwcpError {
  readonly code = "HOST_UNREACHABLE";
  readonly retryable = true;
  constructor(
    readonly host: string,
    options?: { cause?: unknown; sites?: string[] },
  ) {
    const where = options?.sites?.length
      ? `: not registered here, and site(s) ${options.sites.join(", ")} did not answer`
      : " did not answer";
    super(`mover for host "${host}"${where}`, options);
  }
}

/**
 * The coordinator's side of the mover control RPCs (bytes never travel here). A host registered
 * at another site of a federation is found through that site's JetStream domain; its RPCs are
 * plain request/reply, which leafnodes carry like any other subject.
 */
export class MoverGateway {
  /** This site's registrations read in the last REGISTRATION_TTL_MS (or being read): one KV get serves them all. */
  private readonly recent = new Map<string, { at: number; entry: Promise<MoverRegistration | undefined> }>();

  private active = 0;
  /** Requests waiting for a slot: finishing work (finalize, abort) first, then new work (probes). */
  private readonly waiting: { finishing: Array<() => void>; starting: Array<() => void> } = {
    finishing: [],
    starting: [],
  };

  constructor(
    private readonly nc: NatsConnection,
    private readonly registry: KV,
    private readonly remote = new RemoteMovers(nc),
    /** RPCs awaiting their answer at once, over all hosts. Default 64. */
    private readonly maxInFlight = 64,
  ) {}

  async registration(host: string): Promise<MoverRegistration | undefined> {
    return (await this.locate(host))?.registration;
  }

  /**
   * Sends one request to whichever mover process of `host` answers first. Only a host of this
   * site can be a migration's source (probeSource): its work queue is here.
   */
  async request<S extends z.ZodType>(
    host: string,
    req: MoverRequest,
    reply: S,
    timeoutMs = 30_000,
  ): Promise<z.infer<S>> {
    const found = await this.locate(host);
    if (!found) throw new UnknownHostError(host);
    if (found.site !== undefined && req.op === "probeSource") throw new SourceAtOtherSiteError(host, found.site);
    let msg;
    await this.acquire(req.op === "finalize" || req.op === "abort" ? "finishing" : "starting");
    try {
      msg = await requestHost(this.nc, subjects.moverRpc(host), host, JSON.stringify(req), { timeout: timeoutMs });
    } catch (err) {
      throw new HostUnreachableError(host, { cause: err });
    } finally {
      this.release();
    }
    return reply.parse(msg.json());
  }

  /**
   * A slot for one RPC. Ten thousand migrations requested at once would otherwise send twenty
   * thousand probes at once, and the movers' answers would outlast the RPC timeout; queued here,
   * a request's timeout starts when it is sent. A migration about to end goes ahead of those
   * about to start: its finalize does not wait behind thousands of probes.
   */
  private async acquire(kind: "finishing" | "starting"): Promise<void> {
    if (this.active < this.maxInFlight) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting[kind].push(resolve));
  }

  /** Hands the slot to the next queued request, or frees it. */
  private release(): void {
    const next = this.waiting.finishing.shift() ?? this.waiting.starting.shift();
    if (next) next();
    else this.active--;
  }

  /** This site's registration of `host`, else another site's (`site` set); undefined if none. */
  private async locate(host: string): Promise<{ registration: MoverRegistration; site?: string } | undefined> {
    const registration = await this.local(host);
    if (registration) return { registration };
    const remote = await this.remote.find(host);
    if (remote.found) return { registration: remote.registration, site: remote.site };
    if (remote.unreachable.length > 0) throw new HostUnreachableError(host, { sites: remote.unreachable });
    return undefined;
  }

  /**
   * This site's registration of `host`. A thousand migrations planned at once ask for the same
   * two hosts: a found registration is reused for REGISTRATION_TTL_MS (a mover that stopped
   * within it answers no request, which is HOST_UNREACHABLE instead of UNKNOWN_HOST).
   */
  private async local(host: string): Promise<MoverRegistration | undefined> {
    const now = Date.now();
    const hit = this.recent.get(host);
    if (hit && now - hit.at < REGISTRATION_TTL_MS) return hit.entry;
    const entry = this.registry
      .get(host)
      .then((e) =>
        e && e.operation === "PUT" && e.length > 0 ? MoverRegistration.safeParse(e.json()).data : undefined,
      );
    this.recent.set(host, { at: now, entry });
    const found = await entry.catch((err: unknown) => {
      this.recent.delete(host);
      throw err;
    });
    // Only a registration is kept: a host not (yet) registered is looked up again next time.
    if (!found && this.recent.get(host)?.entry === entry) this.recent.delete(host);
    return found;
  }
}
