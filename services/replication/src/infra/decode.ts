import type { JsMsg } from "@nats-io/jetstream";
import { MigrationEvent } from "../../../../schemas/index.js";
import { ReplicationEvent } from "../../../../schemas/replication.js";
import type { ReplayRecord } from "../domain/replay/view.js";
import { originOf } from "./log-reader.js";

const MIGRATION_PREFIX = "dwcp.evt.migration.";
const REPLICATION_PREFIX = "dwcp.evt.replication.";
const decoder = new TextDecoder();

/** Parses a stored event once, at the edge; anything unparseable becomes a `skipped` record. */
export function decodeRecord(subject: string, data: Uint8Array, seq: number, timeMs: number): ReplayRecord {
  try {
    if (subject.startsWith(MIGRATION_PREFIX)) {
      const event = MigrationEvent.parse(JSON.parse(decoder.decode(data)));
      return { kind: "migration", id: subject.slice(MIGRATION_PREFIX.length), seq, timeMs, event };
    }
    if (subject.startsWith(REPLICATION_PREFIX)) {
      const event = ReplicationEvent.parse(JSON.parse(decoder.decode(data)));
      return { kind: "replication", vm: subject.slice(REPLICATION_PREFIX.length), seq, timeMs, event };
    }
  } catch {
    /* counted as skipped: a malformed event is reported, never folded */
  }
  return { kind: "skipped", seq, timeMs };
}

export function decodeMsg(m: JsMsg): ReplayRecord {
  const o = originOf(m);
  return decodeRecord(m.subject, m.data, o.seq, o.timeMs);
}
