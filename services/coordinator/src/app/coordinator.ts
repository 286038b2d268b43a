import { isLive } from "../domain/migration/live.js";
import type { JsMsg } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/transport-node";
import { crc32cCombine, volumeHash } from "#native/index.js";
import {
  AbortReply,
  describeInvalid,
  FinalizeReply,
  ProbeDestinationReply,
  ProbeSourceReply,
  RejectionReason,
} from "#schemas/index.js";
import { errorCode } from "#common/errors.js";
import { handle } from "#common/event-sourcing/handle.js";
import { EventStore, LIVE_CONSUME } from "#common/event-store.js";
import { KeyedLock } from "#common/keyed-lock.js";
import type { Lifecycle } from "#common/lifecycle.js";
import {
  checkLayout,
  CMD_STREAM,
  COORDINATOR_DURABLE,
  openLayout,
  SUMMARY_STREAM,
  workStream,
} from "#common/layout.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import { loadEventTrust } from "#common/signing.js";
import type { CoordinatorConfig } from "../config.js";
import { migrationAggregate } from "../domain/migration/aggregate.js";
import type { MigrationCommand, PlanOutcome } from "../domain/migration/decide.js";
import { basename } from "../domain/migration/planner.js";
import { allBatchesDone, type Migration } from "../domain/migration/state.js";
import { parseCommand } from "../domain/parse-command.js";
import { MigrationMetrics } from "../infra/metrics.js";
import { MoverGateway, UnknownHostError } from "../infra/movers.js";
import { Dispatcher } from "./dispatcher.js";
import { Projection } from "./projection.js";
import { SummaryPublisher } from "./summaries.js";
import { volumeChecksums, volumeHashes } from "./volume-crc.js";

const FINALIZE_RETRY_MS = 2_000;
/**
 * How long one finalize request may go unanswered. A destination mover answers within half of it,
 * "pending" if its finalize still runs, so a request lost on a connection that died (the server
 * has not yet noticed, and hands it to the mover's dead connection) costs seconds, not the length
 * of a verify. Capped by rpc_timeout_ms.
 */
const FINALIZE_TRY_MS = 10_000;
/**
 * Commands decided at once. Each waits for its append's PubAck and for the tail to fold it, so
 * one at a time would cap a coordinator at one round trip per command; the per-migration lock
 * keeps the commands of one migration in arrival order.
 */
const COMMANDS_IN_FLIGHT = 256;
const MAX_FINALIZE_TRIES = 30;

/**
 * The coordinator: validates commands, decides, appends events with optimistic concurrency and
 * drives each migration forward (plan, hand out work, retry, finalize) from the log alone. Any
 * number may run at once: they share one durable command consumer, and every transition is
 * guarded by the aggregate's expected sequence plus a deterministic msgID.
 */
export class Coordinator {
  state: Lifecycle = "starting";
  private readonly projection: Projection;
  private readonly observed: MigrationMetrics;
  private readonly store: EventStore;
  private readonly msgId: (base: string) => string;
  private readonly summaries: SummaryPublisher;
  private movers!: MoverGateway;
  private dispatcher!: Dispatcher;
  private readonly locks = new KeyedLock();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly finalizeTries = new Map<string, number>();
  private readonly cleaned = new Set<string>();
  private caughtUp = false;
  private stopTail?: () => void;
  private stopCommands?: () => void;
  private advisories?: Subscription;
  private loops: Array<Promise<void>> = [];

  constructor(
    private readonly nats: Nats,
    private readonly config: CoordinatorConfig,
    private readonly log: Logger,
  ) {
    const trust = loadEventTrust(config.events, { warn: (msg) => log.warn(msg) });
    this.store = new EventStore(nats.js, nats.jsm, { trust });
    this.msgId = (base) => trust.signer?.msgId(base) ?? base;
    this.projection = new Projection(
      (e, reason) =>
        this.log.warn(
          { subject: e.subject, streamSeq: e.seq, type: e.event.type, reason },
          "event ignored: its producer may not make it",
        ),
      (migrationId, streamSeq, reason) =>
        this.log.error(
          { migrationId, streamSeq, reason },
          "migration set aside: its log holds an event it cannot fold",
        ),
    );
    this.summaries = new SummaryPublisher(nats, trust, (id) => this.projection.get(id).state, log);
    this.observed = new MigrationMetrics(this.projection);
  }

  async start(): Promise<void> {
    // Admin provisions the streams (the coordinator's user may not create them): check only.
    const kv = await openLayout(this.nats.nc, this.nats.jsm);
    await checkLayout(this.nats.jsm, [SUMMARY_STREAM]);
    this.movers = new MoverGateway(this.nats.nc, kv);
    this.dispatcher = new Dispatcher(
      this.nats,
      this.log,
      (host) => checkLayout(this.nats.jsm, [workStream(host)]),
      this.msgId,
      (id) => this.schedule(id),
    );
    let resolveCaughtUp!: () => void;
    const caughtUp = new Promise<void>((r) => (resolveCaughtUp = r));
    const tail = await this.store.tail({
      onEvent: (e) => {
        const id = this.projection.apply(e);
        this.summaries.folded(id, e.seq);
        this.observed.folded(id, e, this.caughtUp);
        if (this.caughtUp) this.schedule(id);
      },
      onCaughtUp: () => {
        this.caughtUp = true;
        for (const id of this.projection.ids()) this.schedule(id);
        resolveCaughtUp();
      },
      onInvalid: (seq, err, subject, provenance) => {
        const id = this.projection.applyInvalid(subject, seq, describeInvalid(err), provenance);
        this.summaries.folded(id, seq);
        this.log.warn({ streamSeq: seq, migrationId: id, err }, "event failed validation; not folded");
      },
    });
    this.stopTail = () => tail.stop();
    this.loops.push(tail.done);
    await caughtUp;
    await this.summaries.start();
    this.advisories = this.dispatcher.watchMaxDeliveries(this.store);
    this.loops.push(this.commandLoop());
    this.state = "running";
    this.log.info({ migrations: this.projection.ids().length }, "coordinator running");
  }

  /**
   * Calls `onEnd` if the event tail, the command loop or the advisory watch ends while the
   * coordinator is running: it can no longer decide, and its supervisor should restart it.
   */
  onLoopEnded(onEnd: (reason: string, err?: unknown) => void): void {
    for (const [name, loop] of [
      ["event tail", this.loops[0]],
      ["command loop", this.loops[1]],
    ] as const) {
      void loop?.then(
        () => this.state === "running" && onEnd(`the ${name} ended`),
        (err: unknown) => this.state === "running" && onEnd(`the ${name} failed`, err),
      );
    }
  }

  /** Stops taking commands, lets in-flight decisions finish, then lets go of the streams. */
  async stop(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "draining";
    this.stopCommands?.();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await this.locks.idle();
    this.advisories?.unsubscribe();
    this.stopTail?.();
    await Promise.allSettled(this.loops);
    await this.summaries.stop();
    this.state = "stopped";
  }

  /** Read-only view for tests and status. */
  view(id: string): Migration {
    return this.projection.get(id).state;
  }

  private async commandLoop(): Promise<void> {
    const consumer = await this.nats.js.consumers.get(CMD_STREAM, COORDINATOR_DURABLE);
    const iter = await consumer.consume({ max_messages: COMMANDS_IN_FLIGHT, ...LIVE_CONSUME });
    this.stopCommands = () => iter.stop();
    // A stop that came while the consumer was being set up found nothing to stop: stop it here.
    if (this.state === "draining" || this.state === "stopped") iter.stop();
    const inFlight = new Set<Promise<void>>();
    for await (const m of iter) {
      while (inFlight.size >= COMMANDS_IN_FLIGHT) await Promise.race(inFlight);
      // handleCommand queues on the migration's lock before its first await: arrival order holds.
      const task: Promise<void> = this.handleCommand(m)
        .then(
          () => m.ack(),
          (err: unknown) => {
            this.log.warn({ err, streamSeq: m.seq }, "command not handled; will be redelivered");
            m.nak(1_000);
          },
        )
        .finally(() => inFlight.delete(task));
      inFlight.add(task);
    }
    await Promise.allSettled(inFlight);
  }

  private async handleCommand(m: JsMsg): Promise<void> {
    const parsed = parseCommand(m.data);
    if (!parsed.ok) {
      this.log.warn(
        { streamSeq: m.seq, reason: parsed.reason, migrationId: parsed.aggregateId },
        `command rejected: ${parsed.message}`,
      );
      const reject = {
        type: "RejectCommand" as const,
        reason: parsed.reason,
        message: parsed.message,
        commandId: parsed.commandId,
        ...(parsed.commandType === undefined ? {} : { command: parsed.commandType }),
      };
      // Where the sender watches: the migration it named (decide refuses beside an existing one),
      // else cmd-<stream sequence>.
      const target = parsed.aggregateId ?? `cmd-${m.seq}`;
      await this.withLock(target, () => this.execute(target, reject, `reject.${m.seq}`));
      return;
    }
    // A refused command (an id in use, a cancel of an unknown or ended migration) is decided as
    // a CommandRejected on the migration it names.
    const { command, aggregateId } = parsed;
    await this.withLock(aggregateId, () => this.execute(aggregateId, command, command.commandId));
  }

  /**
   * Fold, decide, append with the folded sequence; on a conflict wait until the view has folded
   * the subject's new end and decide again (the core's handle loop, over this process's view).
   */
  private async execute(id: string, command: MigrationCommand, msgIdBase: string): Promise<void> {
    const { events, seq } = await handle(
      migrationAggregate,
      {
        load: async (_id, conflict) => {
          if (conflict) await this.projection.waitFor(id, await this.store.lastSeq(id), 5_000);
          return this.projection.get(id);
        },
        append: (_id, evs, base, expectedSeq) => this.store.append(id, evs, base, expectedSeq),
      },
      { id, command, msgIdBase, context: () => ({ now: new Date(), policy: this.config }) },
      // At most the core's DEFAULT_MAX_ATTEMPTS decisions, then TooManyConflictsError.
      { onConflict: (attempt) => this.log.debug({ migrationId: id, attempt }, "version conflict; re-folding") },
    );
    if (events.length === 0) return;
    await this.projection.waitFor(id, seq);
    this.log.info({ migrationId: id, events: events.map((e) => e.type), streamSeq: seq }, "appended");
  }

  /** Runs fn after every earlier task for the same migration: one decision at a time per aggregate. */
  private async withLock(id: string, fn: () => Promise<void>): Promise<void> {
    await this.locks.run(id, fn);
  }

  private schedule(id: string, delayMs = 0): void {
    if (this.state === "draining" || this.state === "stopped") return;
    const run = (): void => {
      this.timers.delete(id);
      this.withLock(id, () => this.reconcile(id)).catch((err: unknown) => {
        this.log.warn({ err, migrationId: id }, "reconcile failed; retrying");
        this.schedule(id, 1_000);
      });
    };
    if (delayMs <= 0) return run();
    if (this.timers.has(id)) return;
    this.timers.set(id, setTimeout(run, delayMs));
  }

  /** Moves one migration forward by whatever its folded state calls for. Idempotent. */
  private async reconcile(id: string): Promise<void> {
    const { state, seq } = this.projection.get(id);
    switch (state.status) {
      case "requested":
        // A live migration is one work item to its source mover, which records its phases.
        if (isLive(state)) return this.dispatcher.dispatchLive(state);
        return this.plan(state);
      case "planned":
      case "running": {
        if (state.batches.some((b) => b.status === "failed")) {
          return this.execute(id, { type: "RetryFailedBatches" }, `${id}.retry.${seq}`);
        }
        const wakeAt = await this.dispatcher.dispatch(state);
        if (wakeAt !== undefined) this.schedule(id, wakeAt - Date.now());
        if (allBatchesDone(state)) return this.finalize(state);
        return;
      }
      case "failed":
      case "cancelled":
        this.dispatcher.forget(id);
        this.finalizeTries.delete(id);
        return this.cleanup(state);
      case "completed":
      case "rejected":
      case "set-aside":
        this.dispatcher.forget(id);
        this.finalizeTries.delete(id);
        return;
      case "none":
        return;
      default: {
        const never: never = state.status;
        return never;
      }
    }
  }

  private async plan(m: Migration): Promise<void> {
    const req = m.request;
    if (!req) return;
    const outcome = await this.probe(m.id, req).catch((err: unknown): PlanOutcome => {
      if (err instanceof UnknownHostError) return { ok: false, reason: "UNKNOWN_HOST", message: err.message };
      return { ok: false, reason: "HOST_UNREACHABLE", message: (err as Error).message };
    });
    await this.execute(m.id, { type: "PlanMigration", outcome }, `${m.id}.plan`);
  }

  private async probe(migrationId: string, req: NonNullable<Migration["request"]>): Promise<PlanOutcome> {
    const t = this.config.rpcTimeoutMs;
    const probeDst = (names: string[]): Promise<ProbeDestinationReply> =>
      this.movers.request(
        req.destination.host,
        {
          op: "probeDestination",
          version: 1,
          migrationId,
          dir: req.destination.dir,
          names,
          ...(req.options.incremental === true ? { incremental: true } : {}),
        },
        ProbeDestinationReply,
        t,
      );
    // Both ends at once (the destination probe only reads). Its names are the request's
    // basenames; the source answers with each path resolved beneath its root, and if that
    // changed a name the destination is asked again with the names the plan will use.
    const asked = req.source.volumes.map((v) => basename(v.path));
    const [srcSettled, dstSettled] = await Promise.allSettled([
      this.movers.request(
        req.source.host,
        {
          op: "probeSource",
          version: 1,
          migrationId,
          paths: req.source.volumes.map((v) => v.path),
          regionBytes: req.options.chunkSizeBytes,
        },
        ProbeSourceReply,
        t,
      ),
      probeDst(asked),
    ]);
    // The source's failure first, as when the two were asked in turn.
    if (srcSettled.status === "rejected") throw srcSettled.reason;
    const src = srcSettled.value;
    if (!src.ok) return { ok: false, reason: asRejection(src.reason), message: src.message };
    const names = src.volumes.map((v) => basename(v.path));
    if (dstSettled.status === "rejected") throw dstSettled.reason;
    const sameNames = names.length === asked.length && names.every((n, i) => n === asked[i]);
    const dst = sameNames ? dstSettled.value : await probeDst(names);
    if (!dst.ok) return { ok: false, reason: asRejection(dst.reason), message: dst.message };
    if (
      req.source.host === req.destination.host &&
      src.volumes.some((v) => v.path.startsWith(`${dst.dir}/`) && !v.path.slice(dst.dir.length + 1).includes("/"))
    ) {
      return {
        ok: false,
        reason: "SAME_HOST_AND_DIR",
        message: "source and destination are the same directory on the same host",
      };
    }
    const volumes = src.volumes.map((v, i) => ({
      kind: req.source.volumes[i]?.kind ?? "disk",
      sourcePath: v.path,
      sizeBytes: v.sizeBytes,
      dataMap: v.dataMap,
      mode: v.mode,
      uid: v.uid,
      gid: v.gid,
    }));
    return { ok: true, destDir: dst.dir, volumes };
  }

  private async finalize(m: Migration): Promise<void> {
    const plan = m.plan;
    const req = m.request;
    if (!plan || !req || !m.options) return;
    const crcs = volumeChecksums(m, crc32cCombine);
    // The source's hashes, from the log: the destination must have received the same bytes.
    const hashes = volumeHashes(m, (h) => volumeHash(h));
    const withHash = <T extends object>(v: T, i: number): T & { blake3?: string } => {
      const blake3 = hashes[i];
      return blake3 === undefined ? v : { ...v, blake3 };
    };
    const volumes = plan.volumes.map((v, i) =>
      withHash({ destName: v.destName, sizeBytes: v.sizeBytes, crc32c: crcs[i] ?? 0, ...ownershipOf(v) }, i),
    );
    const finalize = {
      op: "finalize" as const,
      version: 1 as const,
      migrationId: m.id,
      destDir: plan.destDir,
      verify: m.options.verify,
      ...(m.options.incremental === true ? { incremental: true } : {}),
      chunkSizeBytes: plan.chunkSizeBytes,
      volumes,
    };
    const tryMs = Math.min(this.config.rpcTimeoutMs, FINALIZE_TRY_MS);
    let reply;
    try {
      reply = await this.movers.request(
        req.destination.host,
        { ...finalize, holdMs: Math.max(100, Math.floor(tryMs / 2)) },
        FinalizeReply,
        tryMs,
      );
      if ("pending" in reply) {
        // The destination is alive and still checking the volumes: ask again, no try spent.
        this.log.debug({ migrationId: m.id }, "finalize pending at the destination");
        this.schedule(m.id);
        return;
      }
    } catch (err) {
      const tries = (this.finalizeTries.get(m.id) ?? 0) + 1;
      this.finalizeTries.set(m.id, tries);
      if (tries < MAX_FINALIZE_TRIES) {
        this.log.warn({ err, migrationId: m.id, tries }, "finalize request failed; retrying");
        this.schedule(m.id, FINALIZE_RETRY_MS);
        return;
      }
      reply = {
        ok: false as const,
        reason: "FINALIZE_FAILED" as const,
        message: `destination did not finalize: ${(err as Error).message}`,
      };
    }
    const outcome = reply.ok
      ? {
          ok: true as const,
          volumes: reply.paths.map((destPath, i) => withHash({ destPath, crc32c: crcs[i] ?? 0 }, i)),
        }
      : { ok: false as const, code: finalizeFailure(reply.reason), message: reply.message };
    await this.execute(m.id, { type: "FinalizeMigration", outcome }, `${m.id}.finalize`);
  }

  /** Removes partial files of a failed or cancelled migration; best effort, once per process. */
  private async cleanup(m: Migration): Promise<void> {
    if (this.cleaned.has(m.id) || !m.plan || !m.request) return;
    this.cleaned.add(m.id);
    const names = m.plan.volumes.map((v) => v.destName);
    await this.movers
      .request(
        m.request.destination.host,
        { op: "abort", version: 1, migrationId: m.id, destDir: m.plan.destDir, names },
        AbortReply,
        10_000,
      )
      .catch((err: unknown) =>
        this.log.warn({ migrationId: m.id, code: errorCode(err) }, "could not remove partial files"),
      );
  }
}

/** A mover's refusal as a rejection reason; failure codes it may use map to the nearest one. */
function asRejection(reason: string): RejectionReason {
  return (
    RejectionReason.safeParse(reason).data ??
    (reason === "PATH_OUTSIDE_ROOT" ? "PATH_OUTSIDE_ROOT" : "HOST_UNREACHABLE")
  );
}

/** The failure a destination's finalize refusal becomes: a hash mismatch or failed verify keeps its code. */
function finalizeFailure(reason: string): "VERIFY_FAILED" | "VOLUME_HASH_MISMATCH" | "FINALIZE_FAILED" {
  return reason === "VERIFY_FAILED" || reason === "VOLUME_HASH_MISMATCH" ? reason : "FINALIZE_FAILED";
}

/** The source file's mode and owner a planned volume carries, for the destination to apply. */
function ownershipOf(v: { mode?: number; uid?: number; gid?: number }): { mode?: number; uid?: number; gid?: number } {
  return {
    ...(v.mode === undefined ? {} : { mode: v.mode }),
    ...(v.uid === undefined ? {} : { uid: v.uid }),
    ...(v.gid === undefined ? {} : { gid: v.gid }),
  };
}
