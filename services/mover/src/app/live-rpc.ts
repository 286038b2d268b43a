import { headers, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { LiveReply, LiveRequest, type MigrationRequested, type VmDefinition } from "#schemas/index.js";
import { DwcpError } from "#common/errors.js";
import { safeJson } from "#common/json.js";
import { subjects } from "#common/layout.js";
import type { Logger } from "#common/logger.js";
import { requestHost } from "#common/nats.js";
import { provenanceOf, type EventTrust } from "#common/signing.js";
import { liveRequestProblem } from "../domain/live/authorize.js";
import type { IncomingRequest, LiveDestination } from "../infra/vm/live-incoming.js";

// The live-migration requests between two movers, over NATS request/reply on
// dwcp.mover.<destination host>.live: the source's LiveRpcClient is the LiveDestination that
// live.ts drives; the destination's serveLive answers it with its IncomingVms, for a migration
// its events name as a live one from that source to this host. Every request is signed with the
// source mover's key (the event signature over the subject and the body), so another mover, which
// may publish on the subject too, cannot speak for the source.

/** What a live request's signature covers besides the subject and the body (the event signature's msgID). */
const LIVE_SIGNATURE_ID = "dwcp-live-request-v1";

/** The destination refused or failed a live request; the source rolls back. */
export class LiveRpcError extends DwcpError {
  readonly code = "LIVE_MIGRATION_FAILED";
  readonly retryable = false;
}

/** Prepare starts a QEMU and creates its disks: give it longer than a control request. */
const PREPARE_TIMEOUT_MS = 120_000;
const FINISH_TIMEOUT_MS = 90_000;
const REQUEST_TIMEOUT_MS = 30_000;

/** The source side: the destination mover of one live migration, asked over NATS. */
export class LiveRpcClient implements LiveDestination {
  constructor(
    private readonly nc: NatsConnection,
    private readonly o: { sourceHost: string; destHost: string; destDir: string; trust: EventTrust },
  ) {}

  async prepare(req: IncomingRequest): Promise<void> {
    const diskSizes = Object.entries(req.diskSizes).map(([id, sizeBytes]) => ({ id, sizeBytes }));
    await this.ask(
      {
        op: "livePrepare",
        ...this.common(req.migrationId),
        destDir: this.o.destDir,
        definition: req.definition,
        diskSizes,
        ...(req.postcopy === true ? { postcopy: true } : {}),
      },
      PREPARE_TIMEOUT_MS,
    );
  }

  async finish(migrationId: string): Promise<void> {
    await this.ask({ op: "liveFinish", ...this.common(migrationId) }, FINISH_TIMEOUT_MS);
  }

  /** Undefined while the destination QEMU runs; an unreachable destination is a problem too. */
  async problem(migrationId: string): Promise<string | undefined> {
    try {
      return (await this.ask({ op: "liveProblem", ...this.common(migrationId) }, REQUEST_TIMEOUT_MS)).problem;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  }

  async abort(migrationId: string): Promise<void> {
    await this.ask({ op: "liveAbort", ...this.common(migrationId) }, REQUEST_TIMEOUT_MS);
  }

  private common(migrationId: string) {
    return { version: 1 as const, migrationId, sourceHost: this.o.sourceHost };
  }

  private async ask(req: LiveRequest, timeout: number): Promise<{ problem?: string }> {
    const subject = subjects.moverLive(this.o.destHost);
    const payload = new TextEncoder().encode(JSON.stringify(LiveRequest.parse(req)));
    const h = headers();
    for (const [k, v] of this.o.trust.signer?.sign(subject, LIVE_SIGNATURE_ID, payload) ?? []) h.set(k, v);
    let raw: unknown;
    try {
      raw = safeJson((await requestHost(this.nc, subject, this.o.destHost, payload, { timeout, headers: h })).data);
    } catch (err) {
      throw new LiveRpcError(`${req.op} to the mover of host ${this.o.destHost} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const reply = LiveReply.safeParse(raw);
    if (!reply.success)
      throw new LiveRpcError(`${req.op}: the mover of host ${this.o.destHost} sent a malformed reply`);
    if (!reply.data.ok) throw new LiveRpcError(`${req.op} refused by host ${this.o.destHost}: ${reply.data.message}`);
    return reply.data;
  }
}

export interface LiveServeOptions {
  host: string;
  destination: LiveDestination;
  /** The migration's MigrationRequested as the coordinator signed it, or undefined. */
  requested: (migrationId: string) => Promise<MigrationRequested | undefined>;
  /** The migration's destination directory resolved beneath a root of this mover (created if missing). */
  resolveDir: (dir: string) => Promise<string>;
  /** Whose signatures a request must carry: the mover of the request's source host. */
  trust: EventTrust;
  log: Logger;
}

/** The destination side: answers live requests for migrations to this host. */
export function serveLive(nc: NatsConnection, o: LiveServeOptions): Subscription {
  return nc.subscribe(subjects.moverLive(o.host), {
    callback: (_err, msg) => {
      void (async () => {
        const parsed = LiveRequest.safeParse(safeJson(msg.data));
        if (!parsed.success) {
          o.log.warn({ subject: msg.subject }, "malformed live request refused");
          msg.respond(JSON.stringify({ ok: false, reason: "PROTOCOL_ERROR", message: "malformed live request" }));
          return;
        }
        const req = parsed.data;
        const log = o.log.child({ migrationId: req.migrationId, op: req.op, sourceHost: req.sourceHost });
        const unsigned = signatureProblem(msg, req.sourceHost, o.trust);
        if (unsigned !== undefined) {
          log.warn({ problem: unsigned }, "live request refused");
          msg.respond(JSON.stringify({ ok: false, reason: "AUTH_FAILED", message: unsigned }));
          return;
        }
        try {
          msg.respond(JSON.stringify(await answer(req, o, log)));
        } catch (err) {
          log.warn({ err }, "live request failed");
          msg.respond(JSON.stringify({ ok: false, reason: "LIVE_MIGRATION_FAILED", message: (err as Error).message }));
        }
      })();
    },
  });
}

/** Why `msg` is not signed by the mover of `sourceHost`, or undefined when it is. */
function signatureProblem(msg: Msg, sourceHost: string, trust: EventTrust): string | undefined {
  const signed = {
    get: (k: string): string => (k === "Nats-Msg-Id" ? LIVE_SIGNATURE_ID : (msg.headers?.get(k) ?? "")),
  };
  const p = provenanceOf(trust, msg.subject, signed, msg.data);
  if (p.kind === "insecure") return undefined;
  if (p.kind === "unverified") return `the request is not signed by a known principal (${p.reason})`;
  if (p.principal.role !== `mover-${sourceHost}`)
    return `the request is signed by ${p.principal.role}, not by the mover of host ${sourceHost}`;
  return undefined;
}

async function answer(req: LiveRequest, o: LiveServeOptions, log: Logger): Promise<LiveReply> {
  const problem = liveRequestProblem(await o.requested(req.migrationId), req, o.host);
  if (problem !== undefined) {
    log.warn({ problem }, "live request refused");
    return { ok: false, reason: "AUTH_FAILED", message: problem };
  }
  switch (req.op) {
    case "livePrepare": {
      const definition: VmDefinition = { ...req.definition, root: await o.resolveDir(req.destDir) };
      const diskSizes = Object.fromEntries(req.diskSizes.map((d) => [d.id, d.sizeBytes]));
      await o.destination.prepare({
        migrationId: req.migrationId,
        sourceHost: req.sourceHost,
        definition,
        diskSizes,
        ...(req.postcopy === true ? { postcopy: true } : {}),
      });
      log.info({ vm: definition.name, root: definition.root }, "live migration prepared");
      return { ok: true };
    }
    case "liveFinish":
      await o.destination.finish(req.migrationId);
      log.info("live migration finished: the guest runs here");
      return { ok: true };
    case "liveProblem": {
      const problem = await o.destination.problem(req.migrationId);
      return problem === undefined ? { ok: true } : { ok: true, problem };
    }
    case "liveAbort":
      await o.destination.abort(req.migrationId);
      log.info("live migration aborted here");
      return { ok: true };
    default: {
      const never: never = req;
      return never;
    }
  }
}
