import { DeliverPolicy } from "@nats-io/jetstream";
import { describeInvalid, MigrationSummaryPage, type MigrationSummary } from "#schemas/index.js";
import { ONE_SHOT_CONSUME } from "./event-store.js";
import { signedHeaders } from "./event-sourcing/signed-append.js";
import { SUMMARY_STREAM, subjects } from "./layout.js";
import type { Nats } from "./nats.js";
import { provenanceOf, type EventTrust } from "./signing.js";

// The coordinator's summaries of the migrations (DWCP_SUMMARY, in pages, the last of each page
// kept): read by `dwcp status`, which believes only pages the coordinator signed.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A summary not taken, and why (a producer other than the coordinator, or not a summary). */
export type OnSummaryRefused = (subject: string, why: string) => void;

/** The last token of a subject: the migration id of dwcp.evt.migration.<id>, the page of dwcp.summary.page.<n>. */
const lastToken = (subject: string): string => subject.slice(subject.lastIndexOf(".") + 1);

/** Why a summary message must not be believed, or undefined when it may. */
function refusalOf(trust: EventTrust, subject: string, headers: Parameters<typeof provenanceOf>[2], data: Uint8Array) {
  const p = provenanceOf(trust, subject, headers, data);
  if (p.kind === "insecure") return undefined;
  if (p.kind === "unverified") return `unverified: ${p.reason}`;
  return p.principal.role === "coordinator" ? undefined : `${p.principal.role} may not publish summaries`;
}

/**
 * The latest summary of every migration, by migration id: one ordered read of each page's last
 * message. Pages not signed by the coordinator (under `trust`), malformed or filed under another
 * page's subject are left out and reported through `onRefused`.
 */
export async function readSummaries(
  nats: Nats,
  trust: EventTrust,
  onRefused?: OnSummaryRefused,
): Promise<Map<string, MigrationSummary>> {
  const out = new Map<string, MigrationSummary>();
  for (const page of await readPages(nats, trust, onRefused))
    for (const s of page.summaries)
      if ((out.get(s.migrationId)?.messages ?? -1) < s.messages) out.set(s.migrationId, s);
  return out;
}

/** The last of every summary page the coordinator signed (see readSummaries). */
export async function readPages(
  nats: Nats,
  trust: EventTrust,
  onRefused?: OnSummaryRefused,
): Promise<MigrationSummaryPage[]> {
  const out: MigrationSummaryPage[] = [];
  const consumer = await nats.js.consumers.get(SUMMARY_STREAM, {
    filter_subjects: subjects.summaryPages,
    deliver_policy: DeliverPolicy.LastPerSubject,
  });
  const info = await consumer.info(true);
  if (info.num_pending === 0) return out;
  const iter = await consumer.consume({ max_messages: 64, ...ONE_SHOT_CONSUME });
  try {
    for await (const m of iter) {
      const why = refusalOf(trust, m.subject, m.headers, m.data);
      if (why !== undefined) onRefused?.(m.subject, why);
      else {
        const parsed = parsePage(m.data);
        if (!parsed.ok) onRefused?.(m.subject, parsed.problem);
        else if (String(parsed.page.page) !== lastToken(m.subject))
          onRefused?.(m.subject, `is page ${parsed.page.page}`);
        else out.push(parsed.page);
      }
      if (m.info.pending === 0) break;
    }
  } finally {
    iter.stop();
  }
  return out;
}

function parsePage(data: Uint8Array): { ok: true; page: MigrationSummaryPage } | { ok: false; problem: string } {
  try {
    return { ok: true, page: MigrationSummaryPage.parse(JSON.parse(decoder.decode(data))) };
  } catch (err) {
    return { ok: false, problem: describeInvalid(err) };
  }
}

/**
 * Publishes summary pages, signed with `trust`'s key; resolves when JetStream has stored them
 * all. No msgID: a republished page must replace whatever is stored on its subject, and two
 * coordinators publishing the same page store the same content.
 */
export async function publishPages(nats: Nats, trust: EventTrust, pages: readonly MigrationSummaryPage[]) {
  await Promise.all(
    pages.map((p) => {
      const subject = subjects.summaryPage(p.page);
      const m = { data: encoder.encode(JSON.stringify(p)), msgID: "" };
      const headers = signedHeaders(trust, subject, m);
      return nats.js.publish(subject, m.data, headers ? { headers } : {});
    }),
  );
}

/**
 * How many stored messages each migration's event subject holds, by migration id (one stream
 * info request), for telling a current summary from a stale one.
 */
export async function messagesPerMigration(nats: Nats, eventStream: string): Promise<Map<string, number>> {
  const info = await nats.jsm.streams.info(eventStream, { subjects_filter: subjects.migrationEvents });
  const out = new Map<string, number>();
  for (const [subject, n] of Object.entries(info.state.subjects ?? {})) out.set(lastToken(subject), n);
  return out;
}
