import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { BatchProgress, describeInvalid } from "#schemas/index.js";
import { signedHeaders } from "./event-sourcing/signed-append.js";
import { subjects } from "./layout.js";
import { provenanceOf, type EventTrust } from "./signing.js";

// Batch progress on core NATS (dwcp.progress.<migration id>): signed like events, so a reader
// believes only the mover of the host the batch was sent from.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Publishes one progress report, signed with `trust`'s key (fire and forget: nothing is stored). */
export function publishProgress(nc: NatsConnection, trust: EventTrust, p: BatchProgress): void {
  const subject = subjects.progress(p.migrationId);
  const m = { data: encoder.encode(JSON.stringify(p)), msgID: "" };
  const headers = signedHeaders(trust, subject, m);
  nc.publish(subject, m.data, headers ? { headers } : {});
}

/**
 * A progress report, if it is one and `sourceHost`'s mover made it (under `trust`); else why not.
 */
export function takeProgress(
  m: Pick<Msg, "subject" | "data" | "headers">,
  trust: EventTrust,
  sourceHost: string | undefined,
): { ok: true; progress: BatchProgress } | { ok: false; why: string } {
  const p = provenanceOf(trust, m.subject, m.headers, m.data);
  if (p.kind === "unverified") return { ok: false, why: `unverified: ${p.reason}` };
  let progress: BatchProgress;
  try {
    progress = BatchProgress.parse(JSON.parse(decoder.decode(m.data)));
  } catch (err) {
    return { ok: false, why: describeInvalid(err) };
  }
  if (m.subject !== subjects.progress(progress.migrationId))
    return { ok: false, why: "on another migration's subject" };
  if (sourceHost === undefined || progress.host !== sourceHost)
    return { ok: false, why: `host ${progress.host} does not send this migration` };
  if (p.kind === "signed" && p.principal.role !== `mover-${sourceHost}`)
    return { ok: false, why: `${p.principal.role} may not report host ${sourceHost}'s progress` };
  return { ok: true, progress };
}
