import type {
  ChunkBatchFailed,
  CommandRejectionReason,
  FailureCode,
  LiveMigrationFailed,
  LiveMigrationProgress,
  MigrationOptions,
  MigrationRequested,
  RejectionReason,
  TransferredChunk,
} from "#schemas/index.js";
import type { Plan } from "./planner.js";

type LiveProgressPhase = LiveMigrationProgress["phase"];

export type MigrationStatus =
  | "none"
  | "requested"
  | "planned"
  | "running"
  | "completed"
  | "failed"
  | "cancelled"
  | "rejected"
  /** The log holds an event this migration cannot be folded past: nothing more is done for it. */
  | "set-aside";

export const TERMINAL: ReadonlySet<MigrationStatus> = new Set([
  "completed",
  "failed",
  "cancelled",
  "rejected",
  "set-aside",
]);

/** Why a migration was set aside: the log holds an event it cannot be folded past. */
export const SET_ASIDE = "EVENT_SET_ASIDE";

/** The failure a batch is retried for by time, not by attempts: its destination could not be reached. */
export const UNREACHABLE = "DESTINATION_UNREACHABLE";

export type BatchStatus = "pending" | "done" | "failed";

export interface BatchState {
  status: BatchStatus;
  /** Attempt the current work item carries (0 for the first). */
  attempt: number;
  /** When a retried batch may be handed out again (ISO time). */
  notBefore?: string;
  lastFailure?: Pick<ChunkBatchFailed, "code" | "retryable" | "message" | "attempt" | "host">;
  /** Failures that count against the retry policy's maxAttempts (all but an unreachable destination). */
  chargedFailures?: number;
  /** When the run of failures to reach the destination that the last failure belongs to began (ISO time). */
  unreachableSince?: string;
  chunks?: TransferredChunk[];
}

export interface Totals {
  bytes: number;
  zeroBytes: number;
  wireBytes: number;
  chunks: number;
  batches: number;
  zeroSkippedBytes: number;
  packedInBytes: number;
  packedOutBytes: number;
  /** Bytes of chunks an incremental migration took from the destination's base instead of sending. */
  baseReusedBytes: number;
}

/** An event a fold did not take: its producer was not allowed to make it (see producers.ts). */
export interface IgnoredInput {
  seq: number;
  type: string;
  reason: string;
}

export interface Migration {
  id: string;
  status: MigrationStatus;
  request?: Omit<MigrationRequested, "type" | "version" | "at" | "migrationId">;
  options?: MigrationOptions;
  requestedAt?: string;
  plan?: Plan & { destDir: string };
  batches: BatchState[];
  totals: Totals;
  /** Set when the migration ended: why (a rejection reason or a failure code). */
  reason?: RejectionReason | FailureCode | "CANCELLED" | typeof SET_ASIDE;
  message?: string;
  endedAt?: string;
  /** The command that cancelled the migration, if one did. */
  cancelledBy?: string;
  /** The last SetMigrationOptions taken, so a redelivered one changes nothing twice. */
  optionsSetBy?: string;
  /** Events folded so far. */
  eventCount: number;
  /** A live migration's progress as its source mover recorded it (mode "live" only). */
  live?: LiveState;
  /** Events read but not folded (forged, unsigned, from the wrong producer): the count and the latest. */
  ignored?: { count: number; recent: IgnoredInput[] };
  /**
   * Commands refused without changing this migration (CommandRejected): the count and the
   * latest, so a redelivered command is refused once.
   */
  refusedCommands?: { count: number; recent: RefusedCommand[] };
}

/** Where a live migration stands: the latest of what its source mover recorded. */
export interface LiveState {
  phase: "requested" | "started" | LiveProgressPhase | "completed" | "failed";
  memoryMiB?: number;
  disks?: Array<{ id: string; sizeBytes: number }>;
  /** The latest progress event's figures. */
  progress?: Omit<LiveMigrationProgress, "type" | "version" | "migrationId" | "host">;
  /** Progress events folded. */
  progressCount: number;
  startedAt?: string;
  totalMs?: number;
  downtimeMs?: number;
  pausedMs?: number;
  ramTransferredBytes?: number;
  mirrorBytes?: number;
  /** Where it failed, when it did, and whether the source guest kept running. */
  failedPhase?: LiveMigrationFailed["phase"];
  sourceRunning?: boolean;
}

/** A command refused without changing its migration. */
export interface RefusedCommand {
  commandId?: string;
  reason: CommandRejectionReason;
  at: string;
}

/** How many refused commands a migration keeps the details of (the count is exact). */
export const REFUSED_KEPT = 10;

/** Whether the command with this id was refused already (among the latest kept). */
export const wasRefused = (m: Migration, commandId: string | undefined): boolean =>
  commandId !== undefined && (m.refusedCommands?.recent.some((r) => r.commandId === commandId) ?? false);

export const emptyTotals = (): Totals => ({
  bytes: 0,
  zeroBytes: 0,
  wireBytes: 0,
  chunks: 0,
  batches: 0,
  zeroSkippedBytes: 0,
  packedInBytes: 0,
  packedOutBytes: 0,
  baseReusedBytes: 0,
});

export const initialMigration = (id: string): Migration => ({
  id,
  status: "none",
  batches: [],
  totals: emptyTotals(),
  eventCount: 0,
});

export const isTerminal = (m: Migration): boolean => TERMINAL.has(m.status);

/**
 * The migration set aside: a bad event (invalid, impossible in its state, or one a fold could not
 * take) stops its fold, with `message` saying why, and every other migration goes on. A migration
 * that already ended keeps its outcome (nothing more is done for it either way).
 */
export const setAside = (m: Migration, message: string): Migration =>
  isTerminal(m) ? m : { ...m, status: "set-aside", reason: SET_ASIDE, message };

export const allBatchesDone = (m: Migration): boolean =>
  m.plan !== undefined && m.batches.every((b) => b.status === "done");
