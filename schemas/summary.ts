import { z } from "zod";
import { Id, MAX_MESSAGE_CHARS, Timestamp, Uint } from "./common.js";

/** How many ignored inputs a summary names (the count is exact). */
export const SUMMARY_IGNORED_KEPT = 10;

/**
 * One migration as the coordinator folded it, for readers that want every migration at once
 * (`dwcp status`) without folding every event: published by the coordinator, signed with its key,
 * one message per migration kept (`dwcp.summary.migration.<id>` in DWCP_SUMMARY). `messages` is
 * the number of stored messages of the migration's event subject folded into it (events, ignored
 * and invalid ones alike), so a reader can tell a current summary from a stale one by comparing
 * it with the subject's message count.
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
  /** Logical bytes done: on the wire plus skipped zero. */
  bytes: Uint,
  wireBytes: Uint,
  zeroBytes: Uint,
  totalBytes: Uint.optional(),
  batchesDone: Uint,
  batches: Uint.optional(),
  reason: z.string().max(64).optional(),
  message: z.string().max(MAX_MESSAGE_CHARS).optional(),
  ignored: z
    .object({
      count: Uint,
      recent: z
        .array(z.object({ seq: Uint, type: z.string().max(256), reason: z.string().max(MAX_MESSAGE_CHARS) }))
        .max(SUMMARY_IGNORED_KEPT),
    })
    .optional(),
  /** Messages of the event subject folded (see above). */
  messages: Uint,
  /** Stream sequence of the last of them. */
  lastSeq: Uint,
});

export type MigrationSummary = z.infer<typeof MigrationSummary>;
