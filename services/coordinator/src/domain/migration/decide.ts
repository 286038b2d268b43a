import {
  MAX_BATCHES,
  truncateText,
  type CancelMigration,
  type CommandRejectionReason,
  type CommandType,
  type FailureCode,
  type MigrationEvent,
  type RejectionReason,
  type SetMigrationOptions,
  type StartMigration,
} from "#schemas/index.js";
import { basename, planVolumes, type VolumeSize } from "./planner.js";
import { decideLiveStart, isLive, requestedOf } from "./live.js";
import { allBatchesDone, isTerminal, wasRefused, type Migration } from "./state.js";

/** Time and policy arrive from outside: decide never reads a clock. */
export interface DecideContext {
  now: Date;
  policy: RetryPolicy;
}

export interface RetryPolicy {
  /** Attempts per batch, the first included, that failed with the peers reachable. */
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /**
   * How long a batch keeps being retried while its destination is unreachable (a mover restarting
   * in a rolling upgrade, a WAN outage), counted from its first such failure in a row. Those
   * failures do not use up maxAttempts.
   */
  unreachableLimitMs: number;
  /** Longest wait between retries while the destination is unreachable, so a returning peer is found soon. */
  unreachableBackoffMaxMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 5,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  unreachableLimitMs: 300_000,
  unreachableBackoffMaxMs: 5_000,
};

/** Commands the coordinator decides on: the two public ones plus those its own shell issues. */
export type MigrationCommand =
  | StartMigration
  | CancelMigration
  | SetMigrationOptions
  | {
      type: "RejectCommand";
      commandId?: string;
      command?: CommandType;
      reason: RejectionReason;
      message: string;
    }
  | { type: "PlanMigration"; outcome: PlanOutcome }
  | { type: "RetryFailedBatches" }
  | { type: "FinalizeMigration"; outcome: FinalizeOutcome }
  | { type: "FailMigration"; code: FailureCode; message: string; batch?: number };

export type PlanOutcome =
  | { ok: true; destDir: string; volumes: VolumeSize[] }
  | { ok: false; reason: RejectionReason; message: string };

export type FinalizeOutcome =
  | { ok: true; volumes: Array<{ destPath: string; crc32c: number; blake3?: string }> }
  | { ok: false; code: FailureCode; message: string };

/** Longest message an event of the coordinator carries; what the movers said beyond it is in their logs. */
export const MAX_REASON_CHARS = 1024;
const capped = (message: string): string => truncateText(message, MAX_REASON_CHARS);

/** Pure: what happens when `command` meets `state`. Unknown or stale commands yield no events. */
export function decide(state: Migration, command: MigrationCommand, ctx: DecideContext): MigrationEvent[] {
  const base = { migrationId: state.id, at: ctx.now.toISOString(), version: 1 as const };
  switch (command.type) {
    case "StartMigration":
      if (command.mode === "live" && state.status === "none") return decideLiveStart(command, base);
      return decideStart(state, command, base);
    case "CancelMigration":
      return decideCancel(state, command, base);
    case "SetMigrationOptions":
      return decideSetOptions(state, command, base);
    case "RejectCommand":
      // A malformed command naming a migration that exists is refused beside it, not instead of it.
      if (state.status !== "none") return refuse(state, base, command, command.reason, command.message);
      return [
        {
          type: "MigrationRejected",
          ...base,
          commandId: command.commandId,
          reason: command.reason,
          message: capped(command.message),
        },
      ];
    case "PlanMigration":
      return decidePlan(state, command.outcome, base);
    case "RetryFailedBatches":
      return decideRetries(state, ctx, base);
    case "FinalizeMigration":
      return decideFinalize(state, command.outcome, ctx, base);
    case "FailMigration":
      if (isTerminal(state) || state.status === "none") return [];
      return [
        {
          type: "MigrationFailed",
          ...base,
          code: command.code,
          message: capped(command.message),
          batch: command.batch,
        },
      ];
    default: {
      const never: never = command;
      return never;
    }
  }
}

type Base = { migrationId: string; at: string; version: 1 };

function decideStart(state: Migration, c: StartMigration, base: Base): MigrationEvent[] {
  if (state.status !== "none") {
    if (state.request?.commandId === c.commandId) return [];
    const message = `migration id ${state.id} is already used by another command; choose another id`;
    return refuse(state, base, c, "MIGRATION_ID_IN_USE", message);
  }
  const requested = requestedOf(c, base);
  const names = c.source.volumes.map((v) => basename(v.path));
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) {
    const message = `two volumes share the file name "${dup}"; each lands as <dir>/<basename>, so names must differ`;
    return [
      requested,
      { type: "MigrationRejected", ...base, commandId: c.commandId, reason: "DUPLICATE_DESTINATION", message },
    ];
  }
  return [requested];
}

function decideCancel(state: Migration, c: CancelMigration, base: Base): MigrationEvent[] {
  if (state.status === "none") return refuse(state, base, c, "UNKNOWN_MIGRATION", `no migration with id ${state.id}`);
  if (!isTerminal(state)) return [{ type: "MigrationCancelled", ...base, commandId: c.commandId, reason: c.reason }];
  if (state.status === "cancelled" && state.cancelledBy === c.commandId) return []; // this very command, redelivered
  return refuse(state, base, c, "MIGRATION_ENDED", `migration ${state.id} already ended (${state.status})`);
}

function decideSetOptions(state: Migration, c: SetMigrationOptions, base: Base): MigrationEvent[] {
  if (state.status === "none") return refuse(state, base, c, "UNKNOWN_MIGRATION", `no migration with id ${state.id}`);
  if (state.optionsSetBy === c.commandId) return []; // this very command, redelivered
  if (isTerminal(state))
    return refuse(state, base, c, "MIGRATION_ENDED", `migration ${state.id} already ended (${state.status})`);
  // The event carries every option as it now stands: a field the command left out keeps its value.
  const now = state.options;
  const limit =
    c.bandwidthLimitBytesPerSec === undefined
      ? now?.bandwidthLimitBytesPerSec
      : (c.bandwidthLimitBytesPerSec ?? undefined);
  const weight = c.weight ?? now?.weight;
  const priority = c.priority ?? now?.priority;
  return [
    {
      type: "MigrationOptionsChanged",
      ...base,
      commandId: c.commandId,
      ...(limit === undefined ? {} : { bandwidthLimitBytesPerSec: limit }),
      ...(weight === undefined ? {} : { weight }),
      ...(priority === undefined ? {} : { priority }),
    },
  ];
}

/**
 * A command refused beside the migration it names (CommandRejected), which it leaves as it is;
 * once per command id, so a redelivered command is not refused twice.
 */
function refuse(
  state: Migration,
  base: Base,
  c: { commandId?: string; type: string; command?: CommandType },
  reason: CommandRejectionReason,
  message: string,
): MigrationEvent[] {
  if (wasRefused(state, c.commandId)) return [];
  const command = c.type === "RejectCommand" ? c.command : (c.type as CommandType);
  return [
    {
      type: "CommandRejected",
      ...base,
      ...(c.commandId === undefined ? {} : { commandId: c.commandId }),
      ...(command === undefined ? {} : { command }),
      reason,
      message: capped(message),
    },
  ];
}

function decidePlan(state: Migration, outcome: PlanOutcome, base: Base): MigrationEvent[] {
  // A live migration has no plan of batches: its one work item goes to the source mover (live.ts).
  if (state.status !== "requested" || !state.options || isLive(state)) return [];
  if (!outcome.ok) {
    return [
      {
        type: "MigrationRejected",
        ...base,
        commandId: state.request?.commandId,
        reason: outcome.reason,
        message: capped(outcome.message),
      },
    ];
  }
  const plan = planVolumes(outcome.volumes, state.options.chunkSizeBytes, state.options.batchSizeBytes);
  if (plan.batchCount > MAX_BATCHES) {
    const message =
      `${plan.totalBytes} bytes in batches of ${state.options.batchSizeBytes} bytes make ${plan.batchCount} ` +
      `batches, more than ${MAX_BATCHES}: use a larger --batch-size`;
    return [
      { type: "MigrationRejected", ...base, commandId: state.request?.commandId, reason: "PLAN_TOO_LARGE", message },
    ];
  }
  return [{ type: "MigrationPlanned", ...base, destDir: outcome.destDir, ...plan }];
}

export function backoffMs(attempt: number, policy: RetryPolicy): number {
  return Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** attempt);
}

function decideRetries(state: Migration, ctx: DecideContext, base: Base): MigrationEvent[] {
  if (isTerminal(state) || !state.plan) return [];
  const events: MigrationEvent[] = [];
  for (const [batch, b] of state.batches.entries()) {
    if (b.status !== "failed" || !b.lastFailure) continue;
    const f = b.lastFailure;
    const unreachableMs = b.unreachableSince === undefined ? 0 : ctx.now.getTime() - Date.parse(b.unreachableSince);
    const exhausted =
      b.unreachableSince === undefined
        ? (b.chargedFailures ?? 0) >= ctx.policy.maxAttempts
        : unreachableMs >= ctx.policy.unreachableLimitMs;
    if (!f.retryable || exhausted) {
      const code = f.retryable ? "RETRIES_EXHAUSTED" : f.code;
      const attempt = `attempt ${b.attempt + 1}`;
      const why =
        b.unreachableSince === undefined
          ? `batch ${batch} failed on ${attempt}`
          : `batch ${batch}'s destination unreachable for ${Math.round(unreachableMs / 1000)} s (${attempt})`;
      const message = capped(`${why}: ${f.code}: ${f.message}`);
      return [{ type: "MigrationFailed", ...base, code, message, batch }];
    }
    const wait =
      b.unreachableSince === undefined
        ? backoffMs(b.attempt, ctx.policy)
        : Math.min(ctx.policy.unreachableBackoffMaxMs, backoffMs(b.attempt, ctx.policy));
    const notBefore = new Date(ctx.now.getTime() + wait).toISOString();
    events.push({ type: "ChunkBatchRetried", ...base, batch, attempt: b.attempt + 1, notBefore });
  }
  return events;
}

function decideFinalize(state: Migration, outcome: FinalizeOutcome, ctx: DecideContext, base: Base): MigrationEvent[] {
  if (isTerminal(state) || !allBatchesDone(state) || !state.plan) return [];
  if (!outcome.ok) return [{ type: "MigrationFailed", ...base, code: outcome.code, message: capped(outcome.message) }];
  const started = state.requestedAt ? Date.parse(state.requestedAt) : ctx.now.getTime();
  const volumes = state.plan.volumes.map((v, i) => {
    const done = outcome.volumes[i];
    const volume = {
      index: v.index,
      destPath: done?.destPath ?? "",
      sizeBytes: v.sizeBytes,
      crc32c: done?.crc32c ?? 0,
    };
    // The volume hash both ends agreed on; absent where the log had none.
    return done?.blake3 === undefined ? volume : { ...volume, blake3: done.blake3 };
  });
  return [
    {
      type: "MigrationCompleted",
      ...base,
      totals: state.totals,
      durationMs: Math.max(0, ctx.now.getTime() - started),
      volumes,
    },
  ];
}
