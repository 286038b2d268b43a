import { z } from "zod";
import { Id, Timestamp, Uint } from "./common.js";

/** How many ignored inputs a summary names (the count is exact), and the length of texts in it. */
export const SUMMARY_IGNORED_KEPT = 3;
export const SUMMARY_TEXT_CHARS = 512;
/** Summaries in one page: 256 of at most ~3 KiB each stay well under NATS's 1 MiB payload. */
export const SUMMARY_PAGE_SIZE = 256;

const Text = z.string().max(SUMMARY_TEXT_CHARS);

/**
 * One migration as the coordinator folded it, for readers that want every migration at once
 * (`dwcp status`) without folding every event. `messages` is the number of stored messages of the
 * migration's event subject folded into it (events, ignored and invalid ones alike), so a reader
 * can tell a current summary from a stale one by comparing it with the subject's message count.
 */
export const MigrationSummary = z.object({
  type: z.literal("MigrationSummary"),
  version: z.literal(1),
  migrationId: Id,
  state: z.enum([
    "none",
    "requested",
    "planned",
    "running",
    "completed",
    "failed",
    "cancelled",
    "rejected",
    "set-aside",
  ]),
  vm: z.string().max(256).optional(),
  requestedAt: Timestamp.optional(),
  endedAt: Timestamp.optional(),
  /** Logical bytes done: data (before compression) plus skipped zero. */
  bytes: Uint,
  wireBytes: Uint,
  zeroBytes: Uint,
  /** Of bytes, those an incremental migration's destination took from its earlier copy (absent: none). */
  baseReusedBytes: Uint.optional(),
  totalBytes: Uint.optional(),
  batchesDone: Uint,
  batches: Uint.optional(),
  reason: z.string().max(64).optional(),
  message: Text.optional(),
  ignored: z
    .object({
      count: Uint,
      recent: z.array(z.object({ seq: Uint, type: z.string().max(256), reason: Text })).max(SUMMARY_IGNORED_KEPT),
    })
    .optional(),
  /** Messages of the event subject folded (see above). */
  messages: Uint,
  /** Stream sequence of the last of them. */
  lastSeq: Uint,
});

export type MigrationSummary = z.infer<typeof MigrationSummary>;

/**
 * A page of summaries, published by the coordinator and signed with its key, the last one per
 * page kept (`dwcp.summary.page.<n>` in DWCP_SUMMARY): migration k, in the order the event log
 * first names them, is on page floor(k / SUMMARY_PAGE_SIZE), so a reader checks one signature
 * per page rather than one per migration, and a changed migration rewrites only its page.
 */
export const MigrationSummaryPage = z.object({
  type: z.literal("MigrationSummaryPage"),
  version: z.literal(1),
  page: Uint,
  summaries: z.array(MigrationSummary).max(SUMMARY_PAGE_SIZE),
});

export type MigrationSummaryPage = z.infer<typeof MigrationSummaryPage>;
