import type {
  ChunkBatchFailed,
  FailureCode,
  MigrationOptions,
  MigrationRequested,
  RejectionReason,
  TransferredChunk,
} from "#schemas/index.js";
import type { Plan } from "./planner.js";

export type MigrationStatus =
  | "none"
  | "requested"
  | "planned"
  | "running"
  | "completed"
  | "failed"
  | "cancelled"
  | "rejected";

export const TERMINAL: ReadonlySet<MigrationStatus> = new Set(["completed", "failed", "cancelled", "rejected"]);

export type BatchStatus = "pending" | "done" | "failed";

export interface BatchState {
  status: BatchStatus;
  /** Attempt the current work item carries (0 for the first). */
  attempt: number;
  /** When a retried batch may be handed out again (ISO time). */
  notBefore?: string;
  lastFailure?: Pick<ChunkBatchFailed, "code" | "retryable" | "message" | "attempt" | "host">;
  chunks?: TransferredChunk[];
}

export interface Totals {
  bytes: number;
  zeroBytes: number;
  wireBytes: number;
  chunks: number;
  batches: number;
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
  reason?: RejectionReason | FailureCode | "CANCELLED";
  message?: string;
  endedAt?: string;
  /** Events folded so far. */
  eventCount: number;
  /** Events read but not folded (forged, unsigned, from the wrong producer): the count and the latest. */
  ignored?: { count: number; recent: IgnoredInput[] };
}

export const emptyTotals = (): Totals => ({ bytes: 0, zeroBytes: 0, wireBytes: 0, chunks: 0, batches: 0 });

export const initialMigration = (id: string): Migration => ({
  id,
  status: "none",
  batches: [],
  totals: emptyTotals(),
  eventCount: 0,
});

export const isTerminal = (m: Migration): boolean => TERMINAL.has(m.status);

export const allBatchesDone = (m: Migration): boolean =>
  m.plan !== undefined && m.batches.every((b) => b.status === "done");
