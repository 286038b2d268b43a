import type { JsMsg } from "@nats-io/jetstream";
import { LiveMigrate, type MigrationEvent } from "#schemas/index.js";
import type { EventStore, StoredEvent } from "#common/event-store.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import type { MoverConfig } from "../config.js";
import { liveEventOf, newLiveRecorder, type LiveRecorder } from "../domain/live/events.js";
import type { Registry } from "../infra/registry.js";
import { migrateLive, rollBackLeftovers, type LivePhase, type LiveReport } from "../infra/vm/live.js";
import { statusOf } from "../infra/vm/runner.js";
import { LiveRpcClient } from "./live-rpc.js";
import type { MigrationWatches } from "./migration-watch.js";

// The source mover's side of a live migration: the coordinator's one work item (LiveMigrate)
// runs the whole migration here (live.ts drives both QEMUs; the destination mover is asked over
// live-rpc.ts) and every phase the engine reports is recorded as a signed event, in order. The
// item is held (heartbeat) until the outcome is recorded: a mover that dies mid-migration has it
// redelivered, and its successor rolls back what is left and records the failure.

/** How long a terminal event is retried before the item is left for redelivery. */
const TERMINAL_APPEND_MS = 60_000;

export class LiveWorker {
  constructor(
    private readonly nats: Nats,
    private readonly store: EventStore,
    private readonly registry: Registry,
    private readonly config: MoverConfig,
    private readonly watches: MigrationWatches,
    private readonly log: Logger,
  ) {}

  /** Runs one LiveMigrate work item to its recorded outcome, then acks it. */
  async handle(m: JsMsg, data: unknown, heartbeatMs: number): Promise<void> {
    const parsed = LiveMigrate.safeParse(data);
    if (!parsed.success) {
      this.log.error(
        { streamSeq: m.seq, issues: parsed.error.issues.slice(0, 5) },
        "live work item failed validation; dropped",
      );
      m.ack();
      return;
    }
    const w = parsed.data;
    const log = this.log.child({ migrationId: w.migrationId, vm: w.vm, destHost: w.destHost });
    const stateDir = this.config.vmStateDir;
    if (stateDir === undefined) {
      const message =
        `the mover of host ${this.config.host} runs no live migrations: ` +
        "it has no VM state directory (--vm-state-dir)";
      log.warn(message);
      await this.record(w, { kind: "failed", phase: "prepare", reason: message, cancelled: false }, true, log);
      m.ack();
      return;
    }
    const heartbeat = setInterval(() => m.working(), heartbeatMs);
    try {
      const watch = await this.watches.acquire(w.migrationId);
      try {
        const phase = watch.signal.aborted ? undefined : startedPhase(await this.store.read(w.migrationId));
        if (watch.signal.aborted) {
          log.info("migration already ended; dropping its live work item");
        } else if (phase !== undefined) {
          await this.recover(w, stateDir, phase, log);
        } else {
          await this.run(w, stateDir, watch.signal, log);
        }
      } finally {
        watch.release();
      }
      m.ack();
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async run(w: LiveMigrate, stateDir: string, signal: AbortSignal, log: Logger): Promise<void> {
    const reg = await this.registry.lookup(w.destHost);
    const destination = this.destinationOf(w);
    let recorder = newLiveRecorder();
    let appends: Promise<void> = Promise.resolve();
    let progressSeq = 0;
    let failed: Extract<LiveReport, { kind: "failed" }> | undefined;
    const onReport = (r: LiveReport): void => {
      if (r.kind === "failed") {
        failed = r; // recorded once the outcome is known, with whether the source still runs
        return;
      }
      const next = liveEventOf(recorder, r, { migrationId: w.migrationId, host: this.config.host, now: new Date() });
      recorder = next.recorder;
      const event = next.event;
      if (event === undefined) return;
      const msgId =
        event.type === "LiveMigrationProgress" ? `${w.migrationId}.live.p${++progressSeq}` : liveMsgId(w, event);
      appends = appends.then(() =>
        event.type === "LiveMigrationCompleted"
          ? this.appendTerminal(w, event, msgId, log)
          : this.store.append(w.migrationId, [event], msgId).then(
              () => undefined,
              (err: unknown) => log.warn({ err, event: event.type }, "could not record live progress"),
            ),
      );
    };
    let error: Error | undefined;
    try {
      if (reg === undefined) throw new Error(`no mover has registered host "${w.destHost}"`);
      await migrateLive({
        stateDir,
        name: w.vm,
        migrationId: w.migrationId,
        sourceHost: this.config.host,
        destRoot: w.destDir,
        destination,
        link: {
          address: reg.dataAddress,
          secret: Buffer.from(this.config.secret),
          ...(this.config.link.mode === "tls" ? { tls: { tls: this.config.link.tls, destHost: w.destHost } } : {}),
          ...(w.compression === undefined ? {} : { compression: w.compression }),
        },
        downtimeLimitMs: w.live.downtimeLimitMs,
        bandwidthBytesPerSec: w.live.ramBytesPerSec,
        mirrorBytesPerSec: w.live.mirrorBytesPerSec,
        autoConverge: w.live.autoConverge,
        postcopy: w.live.postcopy,
        writeBlocking: w.live.writeBlocking,
        timeoutMs: w.live.timeoutMs,
        onReport,
        signal,
        log,
      });
    } catch (err) {
      error = err as Error;
    }
    // The events in order: a completed migration's outcome is among them (an append that keeps
    // failing leaves the item to be redelivered, never recorded as a failure).
    await appends;
    if (error === undefined) return;
    const report = failed ?? {
      kind: "failed" as const,
      phase: "prepare" as const,
      reason: error.message,
      cancelled: signal.aborted,
    };
    await this.record(w, report, await sourceRuns(stateDir, w.vm), log, recorder);
  }

  /**
   * The item came back after this migration started (its mover died mid-way): nothing of the
   * previous run is left to drive it, so roll back what it left (the source's migration, mirror
   * jobs and NBD nodes; the destination's QEMU and disks) and record the failure.
   */
  private async recover(w: LiveMigrate, stateDir: string, phase: LivePhase, log: Logger): Promise<void> {
    log.warn("live migration was started by a mover that is gone; rolling it back");
    const running = await rollBackLeftovers(stateDir, w.vm, log);
    const destination = this.destinationOf(w);
    await destination.abort(w.migrationId).catch((err: unknown) => log.warn({ err }, "destination abort failed"));
    // A run that got as far as quitting the source leaves its guest at the destination only.
    const reason = running
      ? "the source mover stopped during the migration; rolled back, the source guest runs on"
      : "the source mover stopped during the migration; the source guest is gone (it may run at the destination)";
    await this.record(w, { kind: "failed", phase, reason, cancelled: false }, running, log);
  }

  /** The destination mover of `w`, asked over NATS with this mover's signature. */
  private destinationOf(w: LiveMigrate): LiveRpcClient {
    return new LiveRpcClient(this.nats.nc, {
      sourceHost: this.config.host,
      destHost: w.destHost,
      destDir: w.destDir,
      trust: this.store.trust,
    });
  }

  private async record(
    w: LiveMigrate,
    report: Extract<LiveReport, { kind: "failed" }>,
    sourceRunning: boolean,
    log: Logger,
    recorder: LiveRecorder = newLiveRecorder(),
  ): Promise<void> {
    const { event } = liveEventOf(recorder, report, {
      migrationId: w.migrationId,
      host: this.config.host,
      now: new Date(),
      sourceRunning,
    });
    if (event !== undefined) await this.appendTerminal(w, event, liveMsgId(w, event), log);
  }

  /** Appends an outcome, retrying through a NATS outage: an unrecorded outcome leaves the item to be redelivered. */
  private async appendTerminal(w: LiveMigrate, event: MigrationEvent, msgId: string, log: Logger): Promise<void> {
    const deadline = Date.now() + TERMINAL_APPEND_MS;
    for (let delay = 250; ; delay = Math.min(delay * 2, 5_000)) {
      try {
        await this.store.append(w.migrationId, [event], msgId);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        log.warn({ err, event: event.type }, "could not record the live migration's outcome; retrying");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}

const LIVE_MSG_SUFFIX: Partial<Record<MigrationEvent["type"], string>> = {
  LiveMigrationStarted: "started",
  LiveMigrationCompleted: "done",
};

/** The msgID of a live migration's start or outcome: one of each per migration. */
const liveMsgId = (w: LiveMigrate, e: MigrationEvent): string =>
  `${w.migrationId}.live.${LIVE_MSG_SUFFIX[e.type] ?? "failed"}`;

/** The phase a started live migration last recorded; undefined if it never started. */
function startedPhase(events: readonly StoredEvent[]): LivePhase | undefined {
  let phase: LivePhase | undefined;
  for (const { event: e } of events) {
    if (e.type === "LiveMigrationStarted") phase = "prepare";
    if (e.type === "LiveMigrationProgress" && phase !== undefined)
      phase = e.phase === "precopy" || e.phase === "switchover" ? e.phase : "mirror";
  }
  return phase;
}

async function sourceRuns(stateDir: string, vm: string): Promise<boolean> {
  try {
    return (await statusOf(stateDir, vm)).state === "running";
  } catch {
    return false;
  }
}
