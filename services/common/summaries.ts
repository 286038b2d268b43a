import { describeInvalid, MigrationSummaryPage, type MigrationSummary } from "#schemas/index.js";
import { isNoMessageFound } from "./event-sourcing/index.js";
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

/**
 * The last of every summary page the coordinator signed (see readSummaries): the page subjects
 * from one stream info, then each page's last message from the stream leader. Not an ordered
 * consumer ending at `pending === 0`: a page republished while such a consumer read it could
 * leave the last delivered message counting one more pending that never came, and the read
 * waited for ever (seen on 2.9.10: 5 of 300 reads with a page republished every 300 ms).
 */
export async function readPages(
  nats: Nats,
  trust: EventTrust,
  onRefused?: OnSummaryRefused,
): Promise<MigrationSummaryPage[]> {
  const info = await nats.jsm.streams.info(SUMMARY_STREAM, { subjects_filter: subjects.summaryPages });
  const pageSubjects = Object.keys(info.state.subjects ?? {});
  const stored = await Promise.all(
    pageSubjects.map((subject) =>
      nats.jsm.streams.getMessage(SUMMARY_STREAM, { last_by_subj: subject }).catch((err: unknown) => {
        if (isNoMessageFound(err)) return null; // purged since the info
        throw err;
      }),
    ),
  );
  const out: MigrationSummaryPage[] = [];
  for (const m of stored) {
    if (!m) continue;
    const why = refusalOf(trust, m.subject, m.header, m.data);
    if (why !== undefined) onRefused?.(m.subject, why);
    else {
      const parsed = parsePage(m.data);
      if (!parsed.ok) onRefused?.(m.subject, parsed.problem);
      else if (String(parsed.page.page) !== lastToken(m.subject)) onRefused?.(m.subject, `is page ${parsed.page.page}`);
      else out.push(parsed.page);
    }
  }
  return out.sort((a, b) => a.page - b.page);
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
