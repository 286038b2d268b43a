import type { JsMsg } from "@nats-io/jetstream";
import { describeInvalid, MigrationEvent } from "#schemas/index.js";
import { ReplicationEvent } from "#schemas/replication.js";
import type { ReplayRecord } from "../domain/replay/view.js";
import { originOf } from "./log-reader.js";
import { compiledSafeParse } from "./schema-check.js";

const MIGRATION_PREFIX = "dwcp.evt.migration.";
const REPLICATION_PREFIX = "dwcp.evt.replication.";
const decoder = new TextDecoder();
// Compiled once: a stored event zod would accept unchanged skips zod's copy (see schema-check.ts).
const parseMigration = compiledSafeParse(MigrationEvent);
const parseReplication = compiledSafeParse(ReplicationEvent);

/** Validates a stored event once, at the edge; anything invalid becomes a `skipped` record. */
export function decodeValue(subject: string, value: unknown, seq: number, timeMs: number): ReplayRecord {
  if (subject.startsWith(MIGRATION_PREFIX)) {
    const r = parseMigration(value);
    const id = subject.slice(MIGRATION_PREFIX.length);
    if (r.success) return { kind: "migration", id, seq, timeMs, event: r.data };
    return { kind: "invalid", id, seq, timeMs, problem: describeInvalid(r.error) };
  } else if (subject.startsWith(REPLICATION_PREFIX)) {
    const r = parseReplication(value);
    if (r.success)
      return { kind: "replication", vm: subject.slice(REPLICATION_PREFIX.length), seq, timeMs, event: r.data };
  }
  return { kind: "skipped", seq, timeMs };
}

export function decodeRecord(subject: string, data: Uint8Array, seq: number, timeMs: number): ReplayRecord {
  if (!subject.startsWith(MIGRATION_PREFIX) && !subject.startsWith(REPLICATION_PREFIX))
    return { kind: "skipped", seq, timeMs };
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(data));
  } catch {
    // A malformed event is counted, never folded; on a migration's subject it sets that one aside.
    if (subject.startsWith(MIGRATION_PREFIX))
      return { kind: "invalid", id: subject.slice(MIGRATION_PREFIX.length), seq, timeMs, problem: "not JSON" };
    return { kind: "skipped", seq, timeMs };
  }
  return decodeValue(subject, value, seq, timeMs);
}

export function decodeMsg(m: JsMsg): ReplayRecord {
  const o = originOf(m);
  return decodeRecord(m.subject, m.data, o.seq, o.timeMs);
}
