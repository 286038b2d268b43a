import { truncateText, type MigrationEvent } from "#schemas/index.js";
import type { LiveReport } from "../../infra/vm/live.js";

// What a source mover records of a live migration: the engine's reports (live.ts) as events,
// progress rate-limited to one per phase change and one per interval. Pure: time comes in.

/** Default: at most one progress event per this many ms within a phase. */
export const LIVE_PROGRESS_INTERVAL_MS = 2_000;
/** Longest failure message recorded; the mover's log has the rest. */
const MAX_LIVE_MESSAGE_CHARS = 1024;

export interface LiveRecorder {
  /** Per disk: mirror bytes done and in all. */
  mirror: Record<string, { done: number; total: number }>;
  lastPhase?: string;
  lastProgressMs?: number;
}

export interface LiveEventContext {
  migrationId: string;
  /** The source host (this mover's). */
  host: string;
  now: Date;
  intervalMs?: number;
  /** For a failure: whether the source guest still runs (the engine rolls back; the shell checks). */
  sourceRunning?: boolean;
}

export const newLiveRecorder = (): LiveRecorder => ({ mirror: {} });

/** The event to record for `r`, if any, and the recorder after it. */
export function liveEventOf(
  s: LiveRecorder,
  r: LiveReport,
  ctx: LiveEventContext,
): { recorder: LiveRecorder; event?: MigrationEvent } {
  const base = { migrationId: ctx.migrationId, at: ctx.now.toISOString(), version: 1 as const, host: ctx.host };
  const nowMs = ctx.now.getTime();
  const mirrorTotals = (m: LiveRecorder["mirror"]) =>
    Object.values(m).reduce((t, d) => ({ done: t.done + d.done, total: t.total + d.total }), { done: 0, total: 0 });
  /** A progress event unless the phase is unchanged and the last one is younger than the interval. */
  const progress = (
    next: LiveRecorder,
    phase: "mirror" | "mirror-ready" | "precopy" | "switchover",
    fields: object,
  ) => {
    const due =
      s.lastPhase !== phase ||
      s.lastProgressMs === undefined ||
      nowMs - s.lastProgressMs >= (ctx.intervalMs ?? LIVE_PROGRESS_INTERVAL_MS);
    if (!due) return { recorder: next };
    const event: MigrationEvent = { type: "LiveMigrationProgress", ...base, phase, ...fields };
    return { recorder: { ...next, lastPhase: phase, lastProgressMs: nowMs }, event };
  };
  switch (r.kind) {
    case "started":
      return {
        recorder: s,
        event: { type: "LiveMigrationStarted", ...base, vm: r.vm, memoryMiB: r.memoryMiB, disks: r.disks },
      };
    case "mirror": {
      const mirror = { ...s.mirror, [r.disk]: { done: r.doneBytes, total: r.totalBytes } };
      const t = mirrorTotals(mirror);
      return progress({ ...s, mirror }, "mirror", { mirrorDoneBytes: t.done, mirrorTotalBytes: t.total });
    }
    case "mirror-ready": {
      const t = mirrorTotals(s.mirror);
      return progress(s, "mirror-ready", {
        mirrorDoneBytes: t.total,
        mirrorTotalBytes: t.total,
        elapsedMs: r.elapsedMs,
      });
    }
    case "precopy":
      return progress(s, "precopy", {
        precopyPass: r.pass,
        remainingBytes: r.remainingBytes,
        transferredBytes: r.transferredBytes,
        dirtyPagesPerSec: Math.max(0, Math.round(r.dirtyPagesPerSec)),
      });
    case "not-converging":
      // Always recorded: the operator learns that precopy stalled and which rung now applies.
      return {
        recorder: { ...s, lastPhase: "precopy", lastProgressMs: nowMs },
        event: {
          type: "LiveMigrationProgress",
          ...base,
          phase: "precopy",
          precopyPass: r.pass,
          remainingBytes: r.remainingBytes,
          rung: r.rung,
          throttlePct: r.throttlePct,
        },
      };
    case "switchover":
      return progress(s, "switchover", {});
    case "completed":
      return {
        recorder: s,
        event: {
          type: "LiveMigrationCompleted",
          ...base,
          totalMs: r.totalMs,
          downtimeMs: r.downtimeMs,
          pausedMs: r.pausedMs,
          ramTransferredBytes: r.ramTransferredBytes,
          mirrorBytes: mirrorTotals(s.mirror).total,
        },
      };
    case "failed":
      return {
        recorder: s,
        event: {
          type: "LiveMigrationFailed",
          ...base,
          code: r.cancelled ? "LIVE_MIGRATION_CANCELLED" : "LIVE_MIGRATION_FAILED",
          phase: r.phase,
          message: truncateText(r.reason, MAX_LIVE_MESSAGE_CHARS),
          sourceRunning: ctx.sourceRunning ?? true,
        },
      };
    default: {
      const never: never = r;
      return never;
    }
  }
}
