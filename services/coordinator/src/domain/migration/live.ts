import type {
  LiveMigrate,
  LiveMigrationCompleted,
  LiveMigrationFailed,
  LiveMigrationProgress,
  LiveMigrationStarted,
  MigrationEvent,
  StartMigration,
} from "#schemas/index.js";
import { isTerminal, setAside, type LiveState, type Migration } from "./state.js";

// Live migration of a running QEMU guest, as the coordinator sees it: one work item to the source
// mover, which runs the whole migration (destination prepare, disk mirror, RAM precopy,
// switchover or rollback) and records its phases. Pure: the shell publishes liveWorkItem's item
// and folds what the mover records.

type Base = { migrationId: string; at: string; version: 1 };
export type LiveEvent = LiveMigrationStarted | LiveMigrationProgress | LiveMigrationCompleted | LiveMigrationFailed;

/** Whether the migration moves a running guest (StartMigration with mode "live"). */
export const isLive = (m: Migration): boolean => m.request?.mode === "live";

/** Whether an event is one the source mover of a live migration records. */
export const isLiveEvent = (e: MigrationEvent): e is LiveEvent =>
  e.type === "LiveMigrationStarted" ||
  e.type === "LiveMigrationProgress" ||
  e.type === "LiveMigrationCompleted" ||
  e.type === "LiveMigrationFailed";

/** The MigrationRequested a StartMigration records; a live one also carries its mode and options. */
export function requestedOf(c: StartMigration, base: Base): MigrationEvent {
  return {
    type: "MigrationRequested",
    ...base,
    commandId: c.commandId,
    vm: c.vm,
    source: c.source,
    destination: c.destination,
    options: c.options,
    ...(c.mode === "live" ? { mode: "live" as const, live: c.live ?? {} } : {}),
  };
}

/**
 * A live StartMigration for an id not used yet: requested, or refused when the source and the
 * destination are the same host (one mover cannot hold the VM twice under its VM state dir).
 */
export function decideLiveStart(c: StartMigration, base: Base): MigrationEvent[] {
  const requested = requestedOf(c, base);
  if (c.source.host === c.destination.host) {
    const message = `a live migration moves VM ${c.vm} to another host; both ends are ${c.source.host}`;
    return [
      requested,
      { type: "MigrationRejected", ...base, commandId: c.commandId, reason: "SAME_HOST_AND_DIR", message },
    ];
  }
  return [requested];
}

/**
 * The one work item of a live migration, while it is to be handed out (requested, not started
 * by the mover yet); undefined otherwise. Its msgID is liveWorkId(id), so handing it out again
 * after a coordinator restart is a no-op within the work stream's duplicate window.
 */
export function liveWorkItem(m: Migration): LiveMigrate | undefined {
  if (!isLive(m) || m.status !== "requested" || m.request === undefined) return undefined;
  return {
    type: "LiveMigrate",
    version: 1,
    migrationId: m.id,
    vm: m.request.vm,
    sourceHost: m.request.source.host,
    destHost: m.request.destination.host,
    destDir: m.request.destination.dir,
    live: m.request.live ?? {},
    ...(m.request.options?.compression === undefined ? {} : { compression: m.request.options.compression }),
  };
}

export const liveWorkId = (migrationId: string): string => `${migrationId}.live`;

/** Order of the phases a live migration passes through; a late report of an earlier one changes nothing. */
const RANK: Record<LiveState["phase"], number> = {
  requested: 0,
  started: 1,
  mirror: 2,
  "mirror-ready": 3,
  precopy: 4,
  switchover: 5,
  completed: 6,
  failed: 6,
};

/** The live state a requested live migration starts with. */
export const requestedLive = (): LiveState => ({ phase: "requested", progressCount: 0 });

/**
 * Folds one event of a live migration's source mover into `s` (state with the event counted;
 * `state` as it was). Facts that arrive late (a progress report after completion) leave it as it
 * is; a live event for a file migration cannot be folded past.
 */
export function evolveLive(s: Migration, state: Migration, e: LiveEvent): Migration {
  if (e.type === "LiveMigrationFailed" && isTerminal(state) && state.live !== undefined) {
    // A cancelled migration's rollback, reported after MigrationCancelled: the outcome stays.
    return { ...s, live: { ...state.live, failedPhase: e.phase, sourceRunning: e.sourceRunning } };
  }
  if (isTerminal(state) || state.status === "none") return s;
  const live = state.live;
  if (!isLive(state) || live === undefined) return setAside(s, `${e.type} for a migration that is not live`);
  switch (e.type) {
    case "LiveMigrationStarted":
      if (state.status !== "requested") return s;
      return {
        ...s,
        status: "running",
        live: { ...live, phase: "started", memoryMiB: e.memoryMiB, disks: e.disks, startedAt: e.at },
      };
    case "LiveMigrationProgress": {
      if (state.status !== "running" || RANK[e.phase] < RANK[live.phase]) return s;
      const { type: _t, version: _v, migrationId: _m, host: _h, ...progress } = e;
      return { ...s, live: { ...live, phase: e.phase, progress, progressCount: live.progressCount + 1 } };
    }
    case "LiveMigrationCompleted":
      return {
        ...s,
        status: "completed",
        endedAt: e.at,
        live: {
          ...live,
          phase: "completed",
          totalMs: e.totalMs,
          downtimeMs: e.downtimeMs,
          pausedMs: e.pausedMs,
          ramTransferredBytes: e.ramTransferredBytes,
          mirrorBytes: e.mirrorBytes,
        },
      };
    case "LiveMigrationFailed":
      return {
        ...s,
        status: e.code === "LIVE_MIGRATION_CANCELLED" ? "cancelled" : "failed",
        reason: e.code,
        message: e.message,
        endedAt: e.at,
        live: { ...live, phase: "failed", failedPhase: e.phase, sourceRunning: e.sourceRunning },
      };
    default: {
      const never: never = e;
      return never;
    }
  }
}

/**
 * Why a live event must not be folded, or undefined: only the mover of the migration's source
 * host records them, naming that host.
 */
export function liveEventRefusal(state: Migration, e: LiveEvent, role: string): string | undefined {
  const assigned = state.request?.source.host;
  if (assigned === undefined) return `${e.type} before the migration was requested`;
  if (role !== `mover-${assigned}` || e.host !== assigned)
    return `${role} may not record ${e.type} for a migration from host ${assigned}`;
  return undefined;
}
