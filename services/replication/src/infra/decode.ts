import type { JsMsg } from "@nats-io/jetstream";
import { describeInvalid, MigrationEvent } from "#schemas/index.js";
import { ReplicationEvent } from "#schemas/replication.js";
import { provenanceOf, type EventTrust, type HeaderReader, type Provenance } from "#common/signing.js";
import type { ReplayRecord } from "../domain/replay/view.js";
import { originOf } from "./log-reader.js";
import { compiledSafeParse } from "./schema-check.js";

const MIGRATION_PREFIX = "dwcp.evt.migration.";
const REPLICATION_PREFIX = "dwcp.evt.replication.";
const decoder = new TextDecoder();
// Compiled once: a stored event zod would accept unchanged skips zod's copy (see schema-check.ts).
const parseMigration = compiledSafeParse(MigrationEvent);
const parseReplication = compiledSafeParse(ReplicationEvent);

/** Whether a subject holds dwcp events a replay folds (others are only counted). */
export const isEventSubject = (subject: string): boolean =>
  subject.startsWith(MIGRATION_PREFIX) || subject.startsWith(REPLICATION_PREFIX);

/**
 * Validates a stored event once, at the edge; anything invalid becomes a `skipped` record.
 * `provenance`: its producer as the reader verified it (undefined: not checked, never folded).
 */
export function decodeValue(
  subject: string,
  value: unknown,
  seq: number,
  timeMs: number,
  provenance?: Provenance,
): ReplayRecord {
  const by = provenance === undefined ? {} : { provenance };
  if (subject.startsWith(MIGRATION_PREFIX)) {
    const r = parseMigration(value);
    const id = subject.slice(MIGRATION_PREFIX.length);
    if (r.success) return { kind: "migration", id, seq, timeMs, event: r.data, ...by };
    return { kind: "invalid", id, seq, timeMs, problem: describeInvalid(r.error), ...by };
  } else if (subject.startsWith(REPLICATION_PREFIX)) {
    const r = parseReplication(value);
    if (r.success)
      return { kind: "replication", vm: subject.slice(REPLICATION_PREFIX.length), seq, timeMs, event: r.data, ...by };
  }
  return { kind: "skipped", seq, timeMs };
}

/** Headers as a backup keeps them ([name, value] pairs), read as NATS does: names case-insensitive. */
export function headerReader(hs: ReadonlyArray<readonly [string, string]> | undefined): HeaderReader {
  return {
    get: (name) => {
      const lower = name.toLowerCase();
      return hs?.find(([k]) => k.toLowerCase() === lower)?.[1] ?? "";
    },
  };
}

/** A stored event's producer as `trust` verifies its signature (only dwcp events are checked). */
export function provenanceAt(
  trust: EventTrust,
  subject: string,
  headers: HeaderReader | undefined,
  payload: () => Uint8Array,
): Provenance | undefined {
  if (!isEventSubject(subject)) return undefined;
  if (trust.insecure) return { kind: "insecure" };
  return provenanceOf(trust, subject, headers, payload());
}

export function decodeRecord(
  subject: string,
  data: Uint8Array,
  seq: number,
  timeMs: number,
  provenance?: Provenance,
): ReplayRecord {
  if (!subject.startsWith(MIGRATION_PREFIX) && !subject.startsWith(REPLICATION_PREFIX))
    return { kind: "skipped", seq, timeMs };
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(data));
  } catch {
    // A malformed event is counted, never folded; on a migration's subject it sets that one aside.
    if (subject.startsWith(MIGRATION_PREFIX)) {
      const id = subject.slice(MIGRATION_PREFIX.length);
      return { kind: "invalid", id, seq, timeMs, problem: "not JSON", ...(provenance ? { provenance } : {}) };
    }
    return { kind: "skipped", seq, timeMs };
  }
  return decodeValue(subject, value, seq, timeMs, provenance);
}

/** A live stream's message as a replay record, its producer checked by `trust`. */
export function decodeMsg(m: JsMsg, trust: EventTrust): ReplayRecord {
  const o = originOf(m);
  return decodeRecord(
    m.subject,
    m.data,
    o.seq,
    o.timeMs,
    provenanceAt(trust, m.subject, m.headers, () => m.data),
  );
}
