import { SUMMARY_IGNORED_KEPT, SUMMARY_TEXT_CHARS, truncateText, type MigrationSummary } from "#schemas/index.js";
import type { Migration } from "./state.js";

/** Where a summary's migration stands in its event subject: messages folded and the last one's sequence. */
export interface FoldedPosition {
  messages: number;
  lastSeq: number;
}

/** A folded migration as its summary (what `dwcp status` shows), at `position` in its log. */
export function summaryOf(m: Migration, position: FoldedPosition): MigrationSummary {
  return {
    type: "MigrationSummary",
    version: 1,
    migrationId: m.id,
    state: m.status,
    ...(m.request?.vm !== undefined ? { vm: m.request.vm } : {}),
    ...(m.requestedAt !== undefined ? { requestedAt: m.requestedAt } : {}),
    ...(m.endedAt !== undefined ? { endedAt: m.endedAt } : {}),
    bytes: m.totals.bytes,
    wireBytes: m.totals.wireBytes,
    zeroBytes: m.totals.zeroBytes,
    ...(m.totals.baseReusedBytes > 0 ? { baseReusedBytes: m.totals.baseReusedBytes } : {}),
    ...(m.plan !== undefined ? { totalBytes: m.plan.totalBytes, batches: m.plan.batchCount } : {}),
    batchesDone: m.batches.filter((b) => b.status === "done").length,
    ...(m.reason !== undefined ? { reason: m.reason } : {}),
    ...(m.message !== undefined ? { message: text(m.message) } : {}),
    ...(m.ignored !== undefined
      ? {
          ignored: {
            count: m.ignored.count,
            recent: m.ignored.recent
              .slice(-SUMMARY_IGNORED_KEPT)
              .map((i) => ({ seq: i.seq, type: i.type.slice(0, 256), reason: text(i.reason) })),
          },
        }
      : {}),
    messages: position.messages,
    lastSeq: position.lastSeq,
  };
}

/** A text cut to fit a summary (truncateText marks the cut, so leave it room). */
const text = (s: string): string => truncateText(s, SUMMARY_TEXT_CHARS - 48);

/** Whether a migration with this summary is one to list (an id only refused commands named is none). */
export const isListed = (s: Pick<MigrationSummary, "state" | "ignored">): boolean =>
  s.state !== "none" || s.ignored !== undefined;
