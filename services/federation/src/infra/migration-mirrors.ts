import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { decodeEvent, ONE_SHOT_CONSUME, type StoredEvent } from "#common/event-store.js";
import { STREAM_LIMITS, EVT_STREAM, subjects } from "#common/layout.js";
import { EVENT_MIRROR_PREFIX } from "#common/remote-movers.js";
import { UNCHECKED, type EventTrust } from "#common/signing.js";
import { ensureMirror } from "./fed-streams.js";

/** A read-only copy, kept at this site, of peer `site`'s migration events (origin sequences). */
export const eventMirror = (site: string): string => `${EVENT_MIRROR_PREFIX}${site}`;

/**
 * One mirror per peer of the peer's DWCP_EVT, filtered to migration events: every site holds
 * every other site's migrations, so a migration is visible (`dwcp events`, `dwcp status`) at its
 * destination site too, also while the link is cut. A mirror and not a source for the reason
 * FEDM_ streams are mirrors: the origin is written with expected-last-subject-sequence headers
 * (see fed-streams.ts). Create it after the origin exists: a 2.12 mirror whose origin is missing
 * backs off and started copying only ~12 s after the origin appeared (probed). Existing mirrors
 * are left as they are.
 */
export async function ensureEventMirrors(jsm: JetStreamManager, site: string, peers: readonly string[]): Promise<void> {
  for (const peer of peers) {
    if (peer === site) continue;
    const source = { name: EVT_STREAM, domain: peer, filter_subject: subjects.migrationEvents };
    await ensureMirror(jsm, eventMirror(peer), source, STREAM_LIMITS.eventMaxMsgBytes);
  }
}

/**
 * A migration's events as mirrored from the site that owns it: the first event mirror holding
 * the migration's subject, read to its last event. Sequences are the owning site's. With `trust`
 * (the federation's trust file) each event carries who signed it, as a local read does; without,
 * each is `unverified: not checked`, as a local read without a trust is.
 */
export async function readMirroredMigration(
  js: JetStreamClient,
  jsm: JetStreamManager,
  id: string,
  trust: EventTrust = UNCHECKED,
): Promise<{ site: string; events: StoredEvent[] } | undefined> {
  const subject = subjects.migration(id);
  for await (const stream of jsm.streams.names()) {
    if (!stream.startsWith(EVENT_MIRROR_PREFIX)) continue;
    const last = await jsm.streams.getMessage(stream, { last_by_subj: subject }).catch(() => null);
    if (!last) continue;
    const events: StoredEvent[] = [];
    const iter = await (await js.consumers.get(stream, { filter_subjects: subject })).consume(ONE_SHOT_CONSUME);
    try {
      for await (const m of iter) {
        const stored = decodeEvent(m, undefined, trust);
        if (stored) events.push(stored);
        if (m.seq >= last.seq) break;
      }
    } finally {
      iter.stop();
    }
    return { site: stream.slice(EVENT_MIRROR_PREFIX.length), events };
  }
  return undefined;
}
