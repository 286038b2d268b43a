import { DeliverPolicy } from "@nats-io/jetstream";
import { describeInvalid, MigrationSummary } from "#schemas/index.js";
import { ONE_SHOT_CONSUME } from "./event-store.js";
import { signedHeaders } from "./event-sourcing/signed-append.js";
import { SUMMARY_STREAM, subjects } from "./layout.js";
import type { Nats } from "./nats.js";
import { provenanceOf, type EventTrust } from "./signing.js";

// The coordinator's per-migration summaries (DWCP_SUMMARY, one message kept per migration): read
// by `dwcp status`, which believes only summaries the coordinator signed.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A summary not taken, and why (a producer other than the coordinator, or not a summary). */
export type OnSummaryRefused = (subject: string, why: string) => void;

/** The migration id of a summary subject dwcp.summary.migration.<id>. */
const idOf = (subject: string): string => subject.slice(subject.lastIndexOf(".") + 1);

/** Why a summary message must not be believed, or undefined when it may. */
function refusalOf(trust: EventTrust, subject: string, headers: Parameters<typeof provenanceOf>[2], data: Uint8Array) {
  const p = provenanceOf(trust, subject, headers, data);
  if (p.kind === "insecure") return undefined;
  if (p.kind === "unverified") return `unverified: ${p.reason}`;
  return p.principal.role === "coordinator" ? undefined : `${p.principal.role} may not publish summaries`;
}

/**
 * The latest summary of every migration, by migration id: one ordered read of the stream's last
 * message per subject. Summaries not signed by the coordinator (under `trust`), malformed or
 * filed under another migration's subject are left out and reported through `onRefused`.
 */
export async function readSummaries(
  nats: Nats,
  trust: EventTrust,
  onRefused?: OnSummaryRefused,
): Promise<Map<string, MigrationSummary>> {
  const out = new Map<string, MigrationSummary>();
  const consumer = await nats.js.consumers.get(SUMMARY_STREAM, {
    filter_subjects: subjects.summaries,
    deliver_policy: DeliverPolicy.LastPerSubject,
  });
  const info = await consumer.info(true);
  if (info.num_pending === 0) return out;
  const iter = await consumer.consume({ max_messages: 1_000, ...ONE_SHOT_CONSUME });
  try {
    for await (const m of iter) {
      const why = refusalOf(trust, m.subject, m.headers, m.data);
      if (why !== undefined) onRefused?.(m.subject, why);
      else {
        const parsed = parseSummary(m.data);
        if (!parsed.ok) onRefused?.(m.subject, parsed.problem);
        else if (parsed.summary.migrationId !== idOf(m.subject))
          onRefused?.(m.subject, `names migration ${parsed.summary.migrationId}`);
        else out.set(parsed.summary.migrationId, parsed.summary);
      }
      if (m.info.pending === 0) break;
    }
  } finally {
    iter.stop();
  }
  return out;
}

function parseSummary(data: Uint8Array): { ok: true; summary: MigrationSummary } | { ok: false; problem: string } {
  try {
    return { ok: true, summary: MigrationSummary.parse(JSON.parse(decoder.decode(data))) };
  } catch (err) {
    return { ok: false, problem: describeInvalid(err) };
  }
}

/**
 * Publishes summaries, signed with `trust`'s key; resolves when JetStream has stored them all.
 * No msgID: a republished summary must replace whatever is stored on its subject (one message is
 * kept per migration), and two coordinators publishing the same one store the same content.
 */
export async function publishSummaries(nats: Nats, trust: EventTrust, summaries: readonly MigrationSummary[]) {
  await Promise.all(
    summaries.map((s) => {
      const subject = subjects.summary(s.migrationId);
      const m = { data: encoder.encode(JSON.stringify(s)), msgID: "" };
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
  for (const [subject, n] of Object.entries(info.state.subjects ?? {})) out.set(idOf(subject), n);
  return out;
}
