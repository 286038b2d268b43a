import { CMD_STREAM, EVT_STREAM, subjects, workStream } from "#common/layout.js";
import { HostId, Id } from "#schemas/common.js";
import { CancelMigration, SetMigrationOptions, StartMigration } from "#schemas/commands.js";
import { MigrationEvent } from "#schemas/events.js";
import { ReplicationEvent, type BackupMessage } from "#schemas/replication.js";
import { TransferBatch } from "#schemas/work.js";
import { echo } from "../domain/backup/signature.js";
import { compiledSafeParse, type SafeParse } from "../infra/schema-check.js";

// What restore-log accepts from a backup: only dwcp's own streams (whatever `dwcp backup` can
// export), each message on one of its stream's subjects with a payload its schema accepts.

/** One of dwcp's streams: the event log, the command stream, or a host's work queue. */
export type DwcpStream = { kind: "evt" } | { kind: "cmd" } | { kind: "work"; host: string };

const WORK_PREFIX = "DWCP_WORK_";

/** Which of dwcp's streams `name` is; undefined for any other name. */
export function dwcpStreamOf(name: string): DwcpStream | undefined {
  if (name === EVT_STREAM) return { kind: "evt" };
  if (name === CMD_STREAM) return { kind: "cmd" };
  if (!name.startsWith(WORK_PREFIX)) return undefined;
  const host = name.slice(WORK_PREFIX.length);
  return HostId.safeParse(host).success && workStream(host) === name ? { kind: "work", host } : undefined;
}

const parseMigration = compiledSafeParse(MigrationEvent);
const parseReplication = compiledSafeParse(ReplicationEvent);
const parseStart = compiledSafeParse(StartMigration);
const parseCancel = compiledSafeParse(CancelMigration);
const parseSetOptions = compiledSafeParse(SetMigrationOptions);
const parseWork = compiledSafeParse(TransferBatch);

const MIGRATION_PREFIX = "dwcp.evt.migration.";
const REPLICATION_PREFIX = "dwcp.evt.replication.";

/** The first issue of a failed parse, short. */
function issue<T>(r: SafeParse<T>): string | undefined {
  if (r.success) return undefined;
  const i = r.error.issues[0];
  return `payload: ${i ? `${i.path.join(".") || "(root)"}: ${i.message}` : "invalid"}`.slice(0, 200);
}

/** The aggregate id a subject ends in, when it is a valid id. */
const idAfter = (subject: string, prefix: string): string | undefined => {
  const id = subject.slice(prefix.length);
  return Id.safeParse(id).success ? id : undefined;
};

function checkEvent(subject: string, value: unknown): string | undefined {
  if (subject.startsWith(MIGRATION_PREFIX)) {
    const id = idAfter(subject, MIGRATION_PREFIX);
    const r = parseMigration(value);
    if (!r.success) return issue(r);
    return id !== undefined && r.data.migrationId === id ? undefined : "subject and migrationId disagree";
  }
  if (subject.startsWith(REPLICATION_PREFIX)) {
    const vm = idAfter(subject, REPLICATION_PREFIX);
    const r = parseReplication(value);
    if (!r.success) return issue(r);
    return vm !== undefined && r.data.vm === vm ? undefined : "subject and vm disagree";
  }
  return `subject ${echo(subject)} is not one of ${EVT_STREAM}'s`;
}

function checkCommand(subject: string, value: unknown): string | undefined {
  if (subject === subjects.startMigration) return issue(parseStart(value));
  if (subject === subjects.cancelMigration) return issue(parseCancel(value));
  if (subject === subjects.setMigrationOptions) return issue(parseSetOptions(value));
  return `subject ${echo(subject)} is not one of ${CMD_STREAM}'s`;
}

function checkWork(host: string, subject: string, value: unknown): string | undefined {
  if (subject !== subjects.work(host)) return `subject ${echo(subject)} is not ${workStream(host)}'s`;
  const r = parseWork(value);
  if (!r.success) return issue(r);
  return r.data.sourceHost === host ? undefined : "work item for another host";
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** The payload as JSON, or undefined when it is not JSON text. */
function jsonOf(m: BackupMessage): { value: unknown } | undefined {
  if (m.data === undefined) return { value: m.json };
  try {
    return { value: JSON.parse(decoder.decode(Buffer.from(m.data, "base64"))) };
  } catch {
    return undefined;
  }
}

/**
 * Why a message cannot be restored into `stream` (subject, then payload against its zod schema),
 * or undefined when it can. Anything echoed from the message is quoted and capped.
 */
export function problemOf(stream: DwcpStream, m: BackupMessage): string | undefined {
  const payload = jsonOf(m);
  if (!payload) return "payload is not JSON";
  switch (stream.kind) {
    case "evt":
      return checkEvent(m.subject, payload.value);
    case "cmd":
      return checkCommand(m.subject, payload.value);
    case "work":
      return checkWork(stream.host, m.subject, payload.value);
    default: {
      const never: never = stream;
      return never;
    }
  }
}
