import { rmSync } from "node:fs";
import { join } from "node:path";
import { DwcpError } from "#common/errors.js";
import type { Logger } from "#common/logger.js";
import type { VmDefinition } from "#schemas/index.js";
import { planMirror } from "../../domain/live/mirror-mode.js";
import { listenTunnel, type OpenTunnel, type TunnelListener, type TunnelOptions } from "../data-channel/tunnel.js";
import { LIVE_CHANNELS, type LiveDestination } from "./live-incoming.js";
import { QmpClient, type QmpEvent } from "./qmp.js";
import { BlockJobEvent, liveQmp, type MigrationInfo } from "./qmp-live.js";
import { isAlive, readRecord, runDirOf } from "./runner.js";
import {
  DEFAULT_STALL_PASSES,
  initialConvergence,
  nextRung,
  observePass,
  type ConvergenceRung,
} from "../../domain/live/convergence.js";

// The source half of a live migration, driving both QEMUs. The destination starts its QEMU paused
// with `-incoming defer` and exports its new disks over NBD; here every disk is mirrored
// (blockdev-mirror, sync=full) to an NBD node reached through a tunnel until the mirror is READY
// (the target follows every guest write from then on), then RAM moves with precopy through another
// tunnel (one per QEMU connection). When precopy completes the source is paused; its mirror is
// ended without pivot (block-job-cancel of a READY job first writes what is still in flight), the
// destination stops its NBD server and runs the guest, and the source QEMU quits. A failure or a
// cancel at any phase before the destination runs cancels what was started, lets the source
// guest run on and has the destination remove its QEMU and disks.

/** A live migration failed or was cancelled; the source guest runs on. */
export class LiveMigrationError extends DwcpError {
  readonly code: "LIVE_MIGRATION_FAILED" | "LIVE_MIGRATION_CANCELLED";
  readonly retryable = false;
  /** The phase it stopped in. */
  readonly phase: LivePhase;
  constructor(message: string, phase: LivePhase, cancelled: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.phase = phase;
    this.code = cancelled ? "LIVE_MIGRATION_CANCELLED" : "LIVE_MIGRATION_FAILED";
  }
}

/** One step of a live migration went wrong (wrapped into LiveMigrationError once rolled back). */
class LiveStepError extends DwcpError {
  readonly code = "LIVE_MIGRATION_FAILED";
  readonly retryable = false;
}

export type LivePhase = "prepare" | "mirror" | "precopy" | "switchover" | "finish";

/** What a live migration reports as it goes, in this order (mirror and precopy bounded by the report interval). */
export type LiveReport =
  | { kind: "started"; vm: string; memoryMiB: number; disks: { id: string; sizeBytes: number }[] }
  | { kind: "mirror"; disk: string; doneBytes: number; totalBytes: number }
  | { kind: "mirror-ready"; elapsedMs: number }
  | {
      kind: "precopy";
      /** Dirty-bitmap syncs so far: pass n copies what pass n - 1 found dirty. */
      pass: number;
      remainingBytes: number;
      transferredBytes: number;
      dirtyPagesPerSec: number;
      mbps: number;
    }
  | {
      kind: "not-converging";
      /** The rung applied now. */
      rung: ConvergenceRung;
      pass: number;
      remainingBytes: number;
      /** Auto-converge's vCPU throttle when the stall was seen. */
      throttlePct: number;
    }
  | { kind: "switchover" }
  | {
      kind: "completed";
      totalMs: number;
      /** QEMU's own downtime figure (query-migrate): source stop to end of the stream. */
      downtimeMs: number;
      /** The guest's pause as this side saw it: source STOP event to the destination running. */
      pausedMs: number;
      ramTransferredBytes: number;
    }
  | { kind: "failed"; phase: LivePhase; reason: string; cancelled: boolean };

export interface LiveOptions {
  /** Where the source VM's run directory is (runner.ts). */
  stateDir: string;
  name: string;
  migrationId: string;
  sourceHost: string;
  /** The destination directory: the definition's root there. */
  destRoot: string;
  destination: LiveDestination;
  /** How tunnels reach the destination mover's data channel. */
  link: Omit<TunnelOptions, "channel" | "migrationId" | "sourceHost">;
  /** Longest pause precopy may plan for at switchover. Default 300 ms (QEMU's). */
  downtimeLimitMs?: number;
  /** RAM stream limit in bytes/s. Default: none. */
  bandwidthBytesPerSec?: number;
  /** Disk mirror limit in bytes/s. Default: none. */
  mirrorBytesPerSec?: number;
  /**
   * The first rung when precopy stalls: throttle the guest's vCPUs (auto-converge) from then on.
   * Default true; false skips it.
   */
  autoConverge?: boolean;
  /**
   * The last rung when precopy stalls: switch to postcopy (the guest runs at the destination and
   * fetches the pages it still lacks from the source). Default false: a migration that stalls on
   * every rung fails, the source guest running on.
   */
  postcopy?: boolean;
  /** Passes without progress that make a stall (domain/live/convergence.ts). Default 5. */
  stallPasses?: number;
  /**
   * Mirror guest writes synchronously (write-blocking) instead of in the background. Default:
   * write-blocking across a WAN (the NBD tunnel's RTT 2 ms or more), background on a local link
   * (domain/live/mirror-mode.ts, which also sizes the mirror's granules for a compressing WAN tunnel).
   */
  writeBlocking?: boolean;
  /** At most one mirror and one precopy report per this interval. Default 500 ms. */
  reportIntervalMs?: number;
  /** Give up if the migration has not completed after this long. Default 600000 ms. */
  timeoutMs?: number;
  onReport?: (r: LiveReport) => void;
  signal?: AbortSignal;
  log: Logger;
}

export interface LiveResult {
  totalMs: number;
  downtimeMs: number;
  pausedMs: number;
}

const nbdNode = (disk: string): string => `live-nbd-${disk}`;
const jobId = (disk: string): string => `live-${disk}`;
/** Effectively unlimited: QEMU's default max-bandwidth (32 MiB/s) would throttle a LAN. */
const UNLIMITED_BYTES_PER_SEC = 64 * 1024 ** 3;

/** Live-migrates the VM `o.name` (recorded under o.stateDir) to the destination. */
export async function migrateLive(o: LiveOptions): Promise<LiveResult> {
  const record = readRecord(o.stateDir, o.name);
  const def = record.definition;
  const qmp = await QmpClient.connect(record.qmp);
  const run = new LiveRun(o, def, qmp);
  try {
    return await run.migrate();
  } finally {
    qmp.close();
  }
}

class LiveRun {
  private phase: LivePhase = "prepare";
  private readonly started = performance.now();
  private readonly listeners: TunnelListener[] = [];
  private readonly mirrored: string[] = [];
  private readonly nbdNodes: string[] = [];
  /** The NBD tunnels' round trip (the largest seen), µs, and whether they compress: the mirror's plan. */
  private nbdRttUs: number | undefined;
  private nbdCompressed = false;
  private migrating = false;
  /** migrate-continue was sent in postcopy: the guest's state is split between the hosts. */
  private postcopyStarted = false;
  /** The NBD nodes are being dropped: their tunnels end as they should. */
  private nbdClosing = false;
  /** The destination's prepare(), awaited before it is told to abort (it may still be starting QEMU). */
  private preparing: Promise<void> | undefined;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private stoppedAt: number | undefined;
  private readonly log: Logger;
  private readonly offEvents: () => void;

  constructor(
    private readonly o: LiveOptions,
    private readonly def: VmDefinition,
    private readonly qmp: QmpClient,
  ) {
    this.log = o.log.child({ migrationId: o.migrationId, vm: def.name });
    this.offEvents = qmp.onEvent((e) => this.onEvent(e));
    o.signal?.addEventListener("abort", this.onAbort, { once: true });
    if (o.signal?.aborted === true) this.onAbort();
  }

  async migrate(): Promise<LiveResult> {
    try {
      const status = await this.qmp.execute("query-status");
      if (status.status !== "running") throw new LiveStepError(`VM ${this.def.name} is ${status.status}, not running`);
      const sizes = await this.diskSizes();
      this.report({
        kind: "started",
        vm: this.def.name,
        memoryMiB: this.def.memoryMiB,
        disks: this.def.disks.map((d) => ({ id: d.id, sizeBytes: sizes[d.id] ?? 0 })),
      });
      this.preparing = this.o.destination.prepare({
        migrationId: this.o.migrationId,
        sourceHost: this.o.sourceHost,
        definition: { ...this.def, root: this.o.destRoot },
        diskSizes: sizes,
        ...(this.o.postcopy === true ? { postcopy: true } : {}),
      });
      await this.guard(this.preparing);
      await this.openTunnels();
      this.phase = "mirror";
      await this.mirror();
      this.phase = "precopy";
      let info = await this.precopy();
      this.phase = "switchover";
      if (this.mirrored.length > 0) await this.endMirror();
      // From here a cancel no longer applies: the source is paused and its disk is in sync.
      this.phase = "finish";
      await this.o.destination.finish(this.o.migrationId);
      const pausedMs = Math.round(performance.now() - (this.stoppedAt ?? performance.now()));
      // In postcopy the guest runs at the destination already; the source serves its missing pages until done.
      if (this.postcopyStarted) info = await this.postcopyDone();
      await this.quitSource();
      const result = {
        totalMs: Math.round(performance.now() - this.started),
        downtimeMs: info.downtime ?? 0,
        pausedMs,
      };
      this.report({ kind: "completed", ...result, ramTransferredBytes: info.ram?.transferred ?? 0 });
      this.log.info(result, "live migration completed");
      return result;
    } catch (err) {
      const cancelled = this.o.signal?.aborted === true;
      const reason = (err as Error).message;
      if (this.postcopyStarted) {
        // The destination holds the guest's device state and the pages it has, the source the rest:
        // neither can run alone, so nothing is rolled back.
        this.log.error({ err }, "live migration failed in postcopy: the guest runs on neither host");
        this.report({ kind: "failed", phase: this.phase, reason, cancelled: false });
        throw new LiveMigrationError(
          `live migration of ${this.def.name} failed in postcopy: ${reason}`,
          this.phase,
          false,
          {
            cause: err,
          },
        );
      }
      this.log.warn({ err, phase: this.phase, cancelled }, "live migration stopped; the source guest runs on");
      await this.rollBack();
      this.report({ kind: "failed", phase: this.phase, reason, cancelled });
      throw new LiveMigrationError(
        `live migration of ${this.def.name} ${cancelled ? "cancelled" : "failed"} (${this.phase}): ${reason}`,
        this.phase,
        cancelled,
        { cause: err },
      );
    } finally {
      this.offEvents();
      this.o.signal?.removeEventListener("abort", this.onAbort);
      await Promise.allSettled(this.listeners.map((l) => l.close()));
    }
  }

  private async diskSizes(): Promise<Record<string, number>> {
    const nodes = await liveQmp(this.qmp, "query-named-block-nodes", { flat: true });
    const sizes: Record<string, number> = {};
    for (const d of this.def.disks) {
      if (d.format !== "raw") throw new LiveStepError("live migration supports raw disks; convert qcow2 disks first");
      const node = nodes.find((n) => n["node-name"] === d.id);
      if (node === undefined) throw new LiveStepError(`QEMU has no block node ${d.id}`);
      sizes[d.id] = node.image["virtual-size"];
    }
    return sizes;
  }

  private async openTunnels(): Promise<void> {
    const runDir = runDirOf(this.o.stateDir, this.def.name);
    const base = { ...this.o.link, migrationId: this.o.migrationId, sourceHost: this.o.sourceHost };
    const error = (err: Error): void => this.fail(err);
    // The NBD tunnels live as long as the mirror's target nodes: one that ends earlier lost the
    // destination (QEMU itself may notice only at its next write, after a throttled pause).
    const nbdClosed = (): void => {
      if (this.nbdNodes.length > 0 && !this.nbdClosing)
        this.fail(new LiveStepError("the disk mirror's tunnel to the destination closed"));
    };
    const nbd = { ...base, channel: LIVE_CHANNELS.nbd };
    const nbdOpened = (t: OpenTunnel): void => {
      if (t.rttUs !== undefined) this.nbdRttUs = Math.max(this.nbdRttUs ?? 0, t.rttUs);
      this.nbdCompressed = t.compression.codec !== "none";
    };
    this.listeners.push(
      await listenTunnel(join(runDir, "live-nbd.sock"), nbd, this.log, { opened: nbdOpened, error, closed: nbdClosed }),
    );
    const migration = { ...base, channel: LIVE_CHANNELS.migration };
    this.listeners.push(await listenTunnel(join(runDir, "live-migration.sock"), migration, this.log, { error }));
  }

  /** Mirrors every disk to the destination's export until all are READY. */
  private async mirror(): Promise<void> {
    const nbd = this.listeners[0]?.path as string;
    const ready = new Set<string>();
    const off = this.qmp.onEvent((e) => {
      if (e.event !== "BLOCK_JOB_READY") return;
      const data = BlockJobEvent.safeParse(e.data);
      if (data.success) ready.add(data.data.device);
      this.poke();
    });
    try {
      for (const d of this.def.disks) {
        await liveQmp(this.qmp, "blockdev-add", {
          driver: "nbd",
          "node-name": nbdNode(d.id),
          server: { type: "unix", path: nbd },
          export: d.id,
        });
        this.nbdNodes.push(nbdNode(d.id));
        // blockdev-add returned once QEMU's NBD client spoke through the tunnel: its link is known.
        const plan = planMirror({
          writeBlocking: this.o.writeBlocking,
          nbdRttUs: this.nbdRttUs,
          compressed: this.nbdCompressed,
        });
        this.log.info({ disk: d.id, ...plan, nbdRttUs: this.nbdRttUs }, "disk mirror starting");
        await liveQmp(this.qmp, "blockdev-mirror", {
          "job-id": jobId(d.id),
          device: d.id,
          target: nbdNode(d.id),
          sync: "full",
          "copy-mode": plan.copyMode,
          ...(plan.granularityBytes === undefined ? {} : { granularity: plan.granularityBytes }),
          ...(plan.bufSizeBytes === undefined ? {} : { "buf-size": plan.bufSizeBytes }),
          ...(this.o.mirrorBytesPerSec === undefined ? {} : { speed: this.o.mirrorBytesPerSec }),
        });
        this.mirrored.push(jobId(d.id));
      }
      const interval = this.o.reportIntervalMs ?? 500;
      let lastReport = 0;
      while (ready.size < this.mirrored.length) {
        this.check();
        if (performance.now() - lastReport >= interval) {
          lastReport = performance.now();
          await this.checkDestination();
          for (const job of await liveQmp(this.qmp, "query-block-jobs")) {
            if (!this.mirrored.includes(job.device)) continue;
            const disk = job.device.slice("live-".length);
            this.report({ kind: "mirror", disk, doneBytes: job.offset, totalBytes: job.len });
          }
        }
        await this.sleep(Math.min(interval, 100));
      }
      this.check();
      this.report({ kind: "mirror-ready", elapsedMs: Math.round(performance.now() - this.started) });
    } finally {
      off();
    }
  }

  /**
   * RAM precopy through the migration tunnel; resolves with QEMU's figures once it completed (or,
   * after the postcopy rung, once postcopy runs). A precopy that stalls (domain/live/convergence.ts)
   * says so and climbs the next rung: auto-converge's throttle, then postcopy if allowed, then it
   * fails. With postcopy allowed QEMU pauses before the switchover, where the mirror is ended
   * before the device state leaves.
   */
  private async precopy(): Promise<MigrationInfo> {
    const autoConverge = this.o.autoConverge !== false;
    const postcopy = this.o.postcopy === true;
    await liveQmp(this.qmp, "migrate-set-capabilities", {
      capabilities: [
        { capability: "events", state: true },
        // On from the start (QEMU cannot turn it on later) but held at 1% until its rung.
        { capability: "auto-converge", state: autoConverge },
        { capability: "postcopy-ram", state: postcopy },
        { capability: "pause-before-switchover", state: postcopy },
      ],
    });
    await liveQmp(this.qmp, "migrate-set-parameters", {
      "downtime-limit": this.o.downtimeLimitMs ?? 300,
      "max-bandwidth": this.o.bandwidthBytesPerSec ?? UNLIMITED_BYTES_PER_SEC,
      ...(autoConverge ? { "cpu-throttle-initial": 1, "max-cpu-throttle": 1 } : {}),
    });
    await liveQmp(this.qmp, "migrate", { uri: `unix:${this.listeners[1]?.path as string}` });
    this.migrating = true;
    const interval = this.o.reportIntervalMs ?? 500;
    const deadline = performance.now() + (this.o.timeoutMs ?? 600_000);
    let lastPass = -1;
    let lastReport = 0;
    let lastCheck = performance.now();
    let convergence = initialConvergence();
    const applied: ConvergenceRung[] = [];
    const stallPasses = this.o.stallPasses ?? DEFAULT_STALL_PASSES;
    for (;;) {
      this.check();
      const info = await liveQmp(this.qmp, "query-migrate");
      if (info.status === "completed") {
        this.migrating = false;
        return info;
      }
      if (info.status === "postcopy-active") return info;
      if (info.status === "pre-switchover") {
        // The source is paused and its device state not sent: the disks are brought in sync first.
        this.phase = "switchover";
        if (this.mirrored.length > 0) await this.endMirror();
        if (applied.includes("postcopy")) {
          this.phase = "finish";
          this.postcopyStarted = true;
        }
        await liveQmp(this.qmp, "migrate-continue", { state: "pre-switchover" });
        continue;
      }
      if (info.status === "failed" || info.status === "cancelled")
        throw new LiveStepError(`QEMU's migration ${info.status}: ${info["error-desc"] ?? "no reason given"}`);
      if (performance.now() - lastCheck >= interval) {
        lastCheck = performance.now();
        await this.checkDestination();
      }
      const pass = info.ram?.["dirty-sync-count"] ?? 0;
      const paused = this.stoppedAt !== undefined;
      if (info.ram !== undefined && !paused && pass !== lastPass && performance.now() - lastReport >= interval) {
        lastPass = pass;
        lastReport = performance.now();
        this.report({
          kind: "precopy",
          pass,
          remainingBytes: info.ram.remaining,
          transferredBytes: info.ram.transferred,
          dirtyPagesPerSec: info.ram["dirty-pages-rate"] ?? 0,
          mbps: info.ram.mbps ?? 0,
        });
      }
      if (info.ram !== undefined && !paused && !applied.includes("postcopy")) {
        const seen = observePass(convergence, { pass, remainingBytes: info.ram.remaining }, { stallPasses });
        convergence = seen.state;
        const throttlePct = info["cpu-throttle-percentage"] ?? 0;
        // Auto-converge ramps its throttle up over many passes: its rung is spent once at its
        // ceiling, or after three times the passes of a stall.
        const spent =
          !applied.includes("auto-converge") || throttlePct >= 99 || convergence.flatPasses >= 3 * stallPasses;
        if (seen.stalled && spent) {
          const rung = nextRung(applied, { autoConverge, postcopy });
          const stuck =
            `${info.ram.remaining} bytes still to copy after ${pass} passes at ` +
            `${Math.round(info.ram.mbps ?? 0)} Mbit/s, the guest throttled to ${throttlePct}%`;
          if (rung === undefined)
            throw new LiveStepError(
              `precopy does not converge: ${stuck}, downtime limit ${this.o.downtimeLimitMs ?? 300} ms ` +
                `(allow postcopy, or raise the downtime limit or the bandwidth)`,
            );
          applied.push(rung);
          convergence = initialConvergence();
          this.log.warn({ rung, pass, remainingBytes: info.ram.remaining, throttlePct }, `precopy stalls: ${rung}`);
          this.report({ kind: "not-converging", rung, pass, remainingBytes: info.ram.remaining, throttlePct });
          if (rung === "auto-converge")
            await liveQmp(this.qmp, "migrate-set-parameters", {
              "cpu-throttle-initial": 20,
              "cpu-throttle-increment": 20,
              "max-cpu-throttle": 99,
            });
          else await liveQmp(this.qmp, "migrate-start-postcopy");
        }
      }
      if (performance.now() > deadline)
        throw new LiveStepError(`precopy did not complete within ${this.o.timeoutMs ?? 600_000} ms`);
      await this.sleep(20);
    }
  }

  /** Postcopy runs with the guest at the destination: waits until the source sent its last page. */
  private async postcopyDone(): Promise<MigrationInfo> {
    const deadline = performance.now() + (this.o.timeoutMs ?? 600_000);
    for (;;) {
      const info = await liveQmp(this.qmp, "query-migrate");
      if (info.status === "completed") {
        this.migrating = false;
        return info;
      }
      if (info.status !== "postcopy-active" && info.status !== "device")
        throw new LiveStepError(`postcopy ended ${info.status ?? "without a status"}: ${info["error-desc"] ?? ""}`);
      if (performance.now() > deadline) throw new LiveStepError("postcopy did not complete in time");
      await this.sleep(20);
    }
  }

  /**
   * The source is paused: ends each mirror without pivot (a READY mirror cancelled writes what is
   * in flight first, so the destination holds the disk as of the pause) and drops the NBD nodes.
   */
  private async endMirror(): Promise<void> {
    const pending = new Set(this.mirrored);
    const errors: string[] = [];
    const off = this.qmp.onEvent((e) => {
      if (e.event !== "BLOCK_JOB_COMPLETED" && e.event !== "BLOCK_JOB_CANCELLED") return;
      const data = BlockJobEvent.safeParse(e.data);
      if (!data.success || !pending.has(data.data.device)) return;
      pending.delete(data.data.device);
      if (e.event === "BLOCK_JOB_CANCELLED") errors.push(`${data.data.device} was cancelled before it was in sync`);
      if (data.data.error !== undefined) errors.push(`${data.data.device}: ${data.data.error}`);
      this.poke();
    });
    try {
      for (const job of this.mirrored) await liveQmp(this.qmp, "block-job-cancel", { device: job });
      while (pending.size > 0) await this.sleep(100);
    } finally {
      off();
    }
    if (errors.length > 0) throw new LiveStepError(`the disk mirror did not end in sync: ${errors.join("; ")}`);
    this.mirrored.length = 0;
    this.nbdClosing = true;
    for (const node of this.nbdNodes.splice(0)) await liveQmp(this.qmp, "blockdev-del", { "node-name": node });
  }

  /** The destination's QEMU must still run (its death shows at the source only at QEMU's next write). */
  private async checkDestination(): Promise<void> {
    const problem = await this.guard(this.o.destination.problem(this.o.migrationId));
    if (problem !== undefined) this.fail(new LiveStepError(problem));
    this.check();
  }

  private async quitSource(): Promise<void> {
    const closed = this.qmp.closed();
    await this.qmp.execute("quit").catch(() => undefined);
    await closed;
    const pid = readRecord(this.o.stateDir, this.o.name).pid;
    const deadline = Date.now() + 30_000;
    while (pid !== undefined && isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    rmSync(runDirOf(this.o.stateDir, this.o.name), { recursive: true, force: true });
  }

  /** Undo what was started, newest first; the source guest runs at the end. Never throws. */
  private async rollBack(): Promise<void> {
    const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        this.log.warn({ err }, `roll back: ${what} failed`);
      }
    };
    if (this.migrating) {
      await step("migrate_cancel", () => liveQmp(this.qmp, "migrate_cancel"));
      // Cancelling takes a moment ("cancelling"): the source is not rolled back until it ended.
      await step("wait for the migration to end", () => migrationEnded(this.qmp, 10_000));
    }
    for (const job of this.mirrored)
      await step(`cancel ${job}`, () => liveQmp(this.qmp, "block-job-cancel", { device: job, force: true }));
    await step("wait for the mirror jobs", () => this.jobsGone(10_000));
    for (const node of this.nbdNodes)
      await step(`drop ${node}`, () => liveQmp(this.qmp, "blockdev-del", { "node-name": node }));
    await step("destination abort", async () => {
      await this.preparing?.catch(() => undefined);
      await this.o.destination.abort(this.o.migrationId);
    });
    await step("resume the source", async () => {
      const s = await this.qmp.execute("query-status");
      if (s.status !== "running") await this.qmp.execute("cont");
    });
  }

  private async jobsGone(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const jobs = await liveQmp(this.qmp, "query-block-jobs");
      if (!jobs.some((j) => this.mirrored.includes(j.device))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new LiveStepError(`mirror jobs still there after ${timeoutMs} ms`);
  }

  private onEvent(e: QmpEvent): void {
    if (e.event === "STOP" && this.migrating && this.stoppedAt === undefined) {
      this.stoppedAt = performance.now();
      this.report({ kind: "switchover" });
    }
    // The guest is paused until the mirror ends and the destination runs: precopy's poll looks
    // at once instead of at its next 20 ms tick.
    if (e.event === "MIGRATION" && this.migrating) this.poke();
    // A mirror that ends before we end it failed (the target went away, an I/O error).
    if (e.event === "BLOCK_JOB_COMPLETED" || e.event === "BLOCK_JOB_CANCELLED" || e.event === "BLOCK_JOB_ERROR") {
      const data = BlockJobEvent.safeParse(e.data);
      if (data.success && this.mirrored.includes(data.data.device) && this.phase !== "switchover")
        this.fail(new LiveStepError(`the disk mirror ${data.data.device} stopped: ${data.data.error ?? e.event}`));
    }
    if (e.event === "SHUTDOWN" && this.phase !== "finish") this.fail(new LiveStepError("the source guest shut down"));
  }

  private readonly onAbort = (): void => {
    if (this.phase !== "finish") this.fail(new LiveStepError("cancelled"));
  };

  private fail(err: Error): void {
    this.failure ??= err;
    this.poke();
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Awaits `p`, or the first failure (cancel, a mirror error) if that comes first. */
  private async guard<T>(p: Promise<T>): Promise<T> {
    let off = (): void => undefined;
    const failed = new Promise<never>((_, reject) => {
      const tick = (): void => (this.failure === undefined ? undefined : reject(this.failure));
      const t = setInterval(tick, 50);
      off = () => clearInterval(t);
      tick();
    });
    try {
      return await Promise.race([p, failed]);
    } finally {
      off();
    }
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private report(r: LiveReport): void {
    try {
      this.o.onReport?.(r);
    } catch (err) {
      this.log.warn({ err }, "a live migration report handler threw");
    }
  }
}

/** Outgoing migration states that are over. */
const ENDED = ["none", "completed", "failed", "cancelled"];

/** Resolves once the VM's outgoing migration is over (a cancel passes through "cancelling"). */
async function migrationEnded(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = (await liveQmp(qmp, "query-migrate")).status ?? "none";
    if (ENDED.includes(status)) return;
    if (Date.now() > deadline)
      throw new LiveStepError(`the outgoing migration is still ${status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Rolls back what a live run that is gone (its mover died) left in the source QEMU of VM `name`:
 * the outgoing migration, the mirror jobs and their NBD nodes; a paused guest is continued.
 * Resolves with whether the guest runs afterwards.
 */
export async function rollBackLeftovers(stateDir: string, name: string, log: Logger): Promise<boolean> {
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(readRecord(stateDir, name).qmp);
  } catch (err) {
    log.warn({ err }, "the source VM does not answer; nothing to roll back there");
    return false;
  }
  const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      log.warn({ err }, `roll back: ${what} failed`);
    }
  };
  try {
    const info = await liveQmp(qmp, "query-migrate");
    if (info.status !== undefined && !ENDED.includes(info.status)) {
      await step("migrate_cancel", () => liveQmp(qmp, "migrate_cancel"));
      await step("wait for the migration to end", () => migrationEnded(qmp, 10_000));
    }
    const ours = (jobs: { device: string }[]) => jobs.filter((j) => j.device.startsWith("live-"));
    for (const job of ours(await liveQmp(qmp, "query-block-jobs")))
      await step(`cancel ${job.device}`, () => liveQmp(qmp, "block-job-cancel", { device: job.device, force: true }));
    const deadline = Date.now() + 10_000;
    while (ours(await liveQmp(qmp, "query-block-jobs")).length > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    const nodes = await liveQmp(qmp, "query-named-block-nodes", { flat: true });
    for (const n of nodes.filter((n) => n["node-name"].startsWith("live-nbd-")))
      await step(`drop ${n["node-name"]}`, () => liveQmp(qmp, "blockdev-del", { "node-name": n["node-name"] }));
    const s = await qmp.execute("query-status");
    if (s.status !== "running") await step("resume the source", () => qmp.execute("cont"));
    return (await qmp.execute("query-status")).status === "running";
  } finally {
    qmp.close();
  }
}
