import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DeliverPolicy } from "@nats-io/jetstream";
import { describeInvalid, type Command, type MigrationEvent, type MigrationSummary } from "#schemas/index.js";
import { EventStore, aggregateOf, LIVE_CONSUME, type StoredEvent } from "#common/event-store.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import { processSetting } from "#common/config.js";
import { identitiesOf } from "#common/pki.js";
import { isStreamNotFound } from "#common/event-sourcing/jetstream-errors.js";
import { messagesPerMigration, readSummaries } from "#common/summaries.js";
import type { Nats, NatsCredentials } from "#common/nats.js";
import { UsageError } from "./args.js";
import { foldMessage } from "./follow.js";
import {
  EventSigner,
  EventTrustConfigError,
  EventVerifier,
  eventTrustSettings,
  INSECURE,
  type EventTrust,
} from "#common/signing.js";
import {
  evolveInvalid,
  evolveTrusted,
  initialMigration,
  isListed,
  isTerminal,
  summaryOf,
  type InvalidInput,
  type Migration,
} from "#migration";

const encoder = new TextEncoder();

const COMMAND_SUBJECT: Record<Command["type"], string> = {
  StartMigration: subjects.startMigration,
  CancelMigration: subjects.cancelMigration,
  SetMigrationOptions: subjects.setMigrationOptions,
};

export const newId = (prefix: string): string => `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 20)}`;

/** Publishes a command with its commandId as msgID: re-publishing the same command is a no-op. */
export async function publishCommand(nats: Nats, command: Command): Promise<number> {
  const subject = COMMAND_SUBJECT[command.type];
  const ack = await nats.js.publish(subject, encoder.encode(JSON.stringify(command)), { msgID: command.commandId });
  return ack.seq;
}

/**
 * How the CLI tells real events from forged ones: the trust file of the stack it talks to
 * (DWCP_TRUST_FILE, else <data dir>/trust.json with the data dir from --data-dir, DWCP_DATA_DIR or
 * .dwcp) and, if there, the cli role's key (DWCP_NKEY_FILE or <data dir>/creds/cli.nk). Without a
 * trust file it refuses, unless DWCP_EVENTS_UNSIGNED=on (then nothing is verified).
 */
export function cliEventTrust(dataDir?: string, env: Record<string, string | undefined> = process.env): EventTrust {
  const source = cliTrustSource(dataDir, env);
  if ("insecure" in source) return INSECURE;
  const s = eventTrustSettings(env);
  const keyFile = s.nkeyFile ?? join(dataDir ?? (env["DWCP_DATA_DIR"] || ".dwcp"), "creds", "cli.nk");
  return {
    insecure: false,
    verifier: EventVerifier.fromTrustFile(source.trustFile),
    ...(existsSync(keyFile) ? { signer: EventSigner.fromSeedFile(keyFile) } : {}),
  };
}

/** Where cliEventTrust finds the trust file (plain data, for readers on worker threads). */
export function cliTrustSource(
  dataDir?: string,
  env: Record<string, string | undefined> = process.env,
): { trustFile: string } | { insecure: true } {
  const s = eventTrustSettings(env);
  if (s.unsigned) return { insecure: true };
  const dir = dataDir ?? (env["DWCP_DATA_DIR"] || ".dwcp");
  const trustFile = s.trustFile ?? join(dir, "trust.json");
  if (!existsSync(trustFile))
    throw new EventTrustConfigError(
      `cannot verify events without the stack's trust file (${trustFile} does not exist): pass --data-dir D ` +
        "of the stack, or set DWCP_TRUST_FILE (DWCP_EVENTS_UNSIGNED=on reads them unverified)",
    );
  return { trustFile };
}

/**
 * One migration folded from its events; with `trust`, only events from producers allowed to make
 * them are folded (the rest are counted in `state.ignored`), else every event as it is.
 */
export async function readMigration(
  nats: Nats,
  id: string,
  trust?: EventTrust,
): Promise<{ state: Migration; events: StoredEvent[] }> {
  const invalid: InvalidInput[] = [];
  const store = new EventStore(nats.js, nats.jsm, { trust: trust ?? INSECURE });
  const events = await store.read(id, (seq, err, _subject, provenance) =>
    invalid.push({ seq, problem: describeInvalid(err), provenance }),
  );
  return { state: foldStored(id, events, invalid), events };
}

/**
 * One migration from its stored events and those that failed validation, in stream order: an
 * invalid one from a trusted producer sets it aside (as the coordinator does) with what was
 * folded before it; an untrusted producer's junk is ignored input.
 */
export function foldStored(
  id: string,
  events: readonly StoredEvent[],
  invalid: readonly InvalidInput[] = [],
): Migration {
  const inOrder = [
    ...events.map((e) => ({ seq: e.seq, event: e })),
    ...invalid.map((i) => ({ seq: i.seq, invalid: i })),
  ].sort((a, b) => a.seq - b.seq);
  let m = initialMigration(id);
  for (const x of inOrder) {
    if ("event" in x) m = evolveTrusted(m, x.event);
    else {
      m = evolveInvalid(m, x.invalid);
      if (m.status === "set-aside") break;
    }
  }
  return m;
}

/**
 * The listing order: by request time, then by id, so migrations requested in the same millisecond
 * come out the same whether they were folded or read from a summary.
 */
function byRequest(atA: string | undefined, idA: string, atB: string | undefined, idB: string): number {
  return (atA ?? "").localeCompare(atB ?? "") || (idA < idB ? -1 : idA > idB ? 1 : 0);
}

/** Folds every migration in the stream, as of now. */
export async function listMigrations(nats: Nats, trust?: EventTrust): Promise<Migration[]> {
  const byId = new Map<string, Migration>();
  let caughtUp!: () => void;
  const done = new Promise<void>((r) => (caughtUp = r));
  const tail = await new EventStore(nats.js, nats.jsm, { trust: trust ?? INSECURE }).tail({
    onEvent: (e) => {
      const id = aggregateOf(e.subject);
      byId.set(id, evolveTrusted(byId.get(id) ?? initialMigration(id), e));
    },
    onCaughtUp: () => caughtUp(),
    onInvalid: (seq, err, subject, provenance) => {
      const id = aggregateOf(subject);
      const input = { seq, problem: describeInvalid(err), provenance };
      byId.set(id, evolveInvalid(byId.get(id) ?? initialMigration(id), input));
    },
  });
  await done;
  tail.stop();
  // An id only refused commands named (a cancel of an unknown id) is no migration.
  return [...byId.values()]
    .filter((m) => m.status !== "none" || m.ignored !== undefined)
    .sort((a, b) => byRequest(a.requestedAt, a.id, b.requestedAt, b.id));
}

/** Stale summaries folded from their events at once. */
const FOLDS_IN_FLIGHT = 16;

/**
 * Every migration's summary, as of now: the coordinator's signed summaries (one message per
 * migration), checked against the number of messages each migration's event subject holds; a
 * migration without a current summary (the coordinator has not caught up, or is not running) is
 * folded from its events, so the answer is the same as folding the whole log, at the cost of one
 * message per migration instead of every event. Without the summary stream (a layout provisioned
 * before it), every migration is folded.
 */
export async function listSummaries(nats: Nats, trust: EventTrust): Promise<MigrationSummary[]> {
  let summaries: Map<string, MigrationSummary>;
  let counts: Map<string, number>;
  try {
    [summaries, counts] = await Promise.all([readSummaries(nats, trust), messagesPerMigration(nats, EVT_STREAM)]);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    const all = await listMigrations(nats, trust);
    return all.map((m) => summaryOf(m, { messages: m.eventCount, lastSeq: 0 }));
  }
  const stale = [...counts].filter(([id, n]) => summaries.get(id)?.messages !== n);
  for (let i = 0; i < stale.length; i += FOLDS_IN_FLIGHT) {
    await Promise.all(
      stale.slice(i, i + FOLDS_IN_FLIGHT).map(async ([id, messages]) => {
        const { state, events } = await readMigration(nats, id, trust);
        summaries.set(id, summaryOf(state, { messages, lastSeq: events.at(-1)?.seq ?? 0 }));
      }),
    );
  }
  return [...summaries.values()]
    .filter(isListed)
    .sort((a, b) => byRequest(a.requestedAt, a.migrationId, b.requestedAt, b.migrationId));
}

/**
 * Follows one migration's events from the beginning until it ends; `onEvent` sees each event with
 * the state folded so far. Resolves with the final state.
 */
export async function watchMigration(
  nats: Nats,
  id: string,
  onEvent: (event: MigrationEvent, state: Migration) => void,
  signal?: AbortSignal,
  trust?: EventTrust,
): Promise<Migration> {
  const consumer = await nats.js.consumers.get(EVT_STREAM, {
    filter_subjects: subjects.migration(id),
    deliver_policy: DeliverPolicy.All,
  });
  const iter = await consumer.consume(LIVE_CONSUME);
  signal?.addEventListener("abort", () => iter.stop(), { once: true });
  let state = initialMigration(id);
  try {
    for await (const m of iter) {
      const { state: next, taken } = foldMessage(state, m, trust ?? INSECURE);
      state = next;
      if (taken) onEvent(taken.event, state);
      if (isTerminal(state)) break;
    }
  } finally {
    iter.stop();
  }
  return state;
}

/** Commands that run as a client of NATS (not a service or a stack of their own), and as whom. */
const CLIENT_ROLE: Record<string, "cli" | "admin" | "observer"> = {
  init: "admin",
  backup: "admin",
  "restore-log": "admin",
  migrate: "cli",
  status: "cli",
  events: "cli",
  cancel: "cli",
  "migrate-set": "cli",
  federation: "cli",
  replay: "cli",
  snapshots: "cli",
  restore: "cli",
  replicate: "cli",
  dashboard: "observer",
};

/** The role a command connects as; undefined for services and commands that run their own stack. */
export const clientRoleOf = (cmd: string): "cli" | "admin" | "observer" | undefined =>
  Object.hasOwn(CLIENT_ROLE, cmd) ? CLIENT_ROLE[cmd] : undefined;

/** Where the CLI finds the credentials of the stack it talks to. */
export interface CredentialFlags {
  /** The stack's data dir (`dwcp up --data-dir`, default .dwcp): D/creds/<role>.nk and D/pki/. */
  dataDir?: string | undefined;
  creds?: string | undefined;
  tlsCa?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
}

const CREDENTIAL_FLAGS = {
  "--creds": "creds",
  "--tls-ca": "tlsCa",
  "--tls-cert": "tlsCert",
  "--tls-key": "tlsKey",
} as const;

/**
 * Takes the credential flags out of `argv` (`--creds`, `--tls-ca`, `--tls-cert`, `--tls-key`, and
 * `--data-dir` unless the command keeps it for itself), in `--flag value` or `--flag=value` form.
 */
export function takeCredentialFlags(argv: string[], keepDataDir: boolean): { argv: string[]; flags: CredentialFlags } {
  const rest: string[] = [];
  const flags: CredentialFlags = {};
  const names: Record<string, keyof CredentialFlags> = { ...CREDENTIAL_FLAGS, "--data-dir": "dataDir" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(0, eq) : a;
    const key = names[name];
    if (key === undefined) {
      rest.push(a);
      continue;
    }
    const value = eq > 0 ? a.slice(eq + 1) : argv[i + 1];
    if (value === undefined || value.startsWith("--")) throw new UsageError(`${name} needs a value`);
    if (eq <= 0) i++;
    flags[key] = value;
    if (key === "dataDir" && keepDataDir) rest.push(name, value);
  }
  return { argv: rest, flags };
}

/**
 * The role a client certificate names (its `dwcp:role:<name>` URI): given files may be any
 * role's (an observer's, say), and the role sets the inbox prefix its permissions allow.
 */
function roleInCertificate(certFile: string, fallback: string): string {
  try {
    const id = identitiesOf(readFileSync(certFile)).find((i) => i.startsWith("dwcp:role:"));
    return id === undefined ? fallback : id.slice("dwcp:role:".length);
  } catch {
    return fallback; // an unreadable certificate is reported by the connection, with its path
  }
}

/**
 * The credentials of `role` for the stack the CLI talks to: `--creds` with `--tls-*` (all four),
 * else DWCP_NKEY_FILE and DWCP_TLS_* from the environment, else the stack's data dir
 * (`--data-dir`, default .dwcp) if it holds them; undefined when none is found (the connection is
 * then anonymous, and a server that wants credentials says so).
 */
export function findCredentials(
  f: CredentialFlags,
  role: "cli" | "admin" | "observer",
  env: Record<string, string | undefined> = process.env,
): NatsCredentials | undefined {
  const given = [f.creds, f.tlsCa, f.tlsCert, f.tlsKey];
  if (given.some((v) => v !== undefined)) {
    if (given.some((v) => v === undefined))
      throw new UsageError("--creds, --tls-ca, --tls-cert and --tls-key go together: pass all four");
    const certFile = f.tlsCert ?? "";
    const keyFile = f.tlsKey ?? "";
    return {
      role: roleInCertificate(certFile, role),
      nkeyFile: f.creds ?? "",
      caFile: f.tlsCa ?? "",
      certFile,
      keyFile,
    };
  }
  // DWCP_NATS_INSECURE=on: the server takes anonymous plaintext clients (a trusted test network).
  if (processSetting("natsInsecure", env) === "on") return undefined;
  const fromEnv = {
    nkeyFile: processSetting("nkeyFile", env),
    caFile: processSetting("tlsCa", env),
    certFile: processSetting("tlsCert", env),
    keyFile: processSetting("tlsKey", env),
  };
  if (f.dataDir === undefined && Object.values(fromEnv).every((v) => v !== undefined))
    return { ...(fromEnv as Omit<NatsCredentials, "role">), role: roleInCertificate(fromEnv.certFile ?? "", role) };
  const dir = f.dataDir ?? ".dwcp";
  const inDir = {
    nkeyFile: join(dir, "creds", `${role}.nk`),
    caFile: join(dir, "pki", "ca.pem"),
    certFile: join(dir, "pki", `${role}.pem`),
    keyFile: join(dir, "pki", `${role}.key`),
  };
  return Object.values(inDir).every((p) => existsSync(p)) ? { role, ...inDir } : undefined;
}
