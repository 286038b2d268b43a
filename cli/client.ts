import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DeliverPolicy } from "@nats-io/jetstream";
import type { CancelMigration, MigrationEvent, StartMigration } from "#schemas/index.js";
import { decodeEvent, EventStore, aggregateOf, LIVE_CONSUME, type StoredEvent } from "#common/event-store.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import {
  EventSigner,
  EventTrustConfigError,
  EventVerifier,
  eventTrustSettings,
  INSECURE,
  type EventTrust,
} from "#common/signing.js";
import { evolveTrusted, foldTrusted, initialMigration, isTerminal, type Migration } from "#migration";

const encoder = new TextEncoder();

export const newId = (prefix: string): string => `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 20)}`;

/** Publishes a command with its commandId as msgID: re-publishing the same command is a no-op. */
export async function publishCommand(nats: Nats, command: StartMigration | CancelMigration): Promise<number> {
  const subject = command.type === "StartMigration" ? subjects.startMigration : subjects.cancelMigration;
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
  const s = eventTrustSettings(env);
  if (s.unsigned) return INSECURE;
  const dir = dataDir ?? (env["DWCP_DATA_DIR"] || ".dwcp");
  const trustFile = s.trustFile ?? join(dir, "trust.json");
  if (!existsSync(trustFile))
    throw new EventTrustConfigError(
      `cannot verify events without the stack's trust file (${trustFile} does not exist): pass --data-dir D ` +
        "of the stack, or set DWCP_TRUST_FILE (DWCP_EVENTS_UNSIGNED=on reads them unverified)",
    );
  const keyFile = s.nkeyFile ?? join(dir, "creds", "cli.nk");
  return {
    insecure: false,
    verifier: EventVerifier.fromTrustFile(trustFile),
    ...(existsSync(keyFile) ? { signer: EventSigner.fromSeedFile(keyFile) } : {}),
  };
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
  const events = await new EventStore(nats.js, nats.jsm, { trust: trust ?? INSECURE }).read(id);
  return { state: foldTrusted(id, events), events };
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
  });
  await done;
  tail.stop();
  return [...byId.values()].sort((a, b) => (a.requestedAt ?? "").localeCompare(b.requestedAt ?? ""));
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
      const stored = decodeEvent(m, undefined, trust ?? INSECURE);
      if (!stored) continue;
      const before = state.ignored?.count ?? 0;
      state = evolveTrusted(state, stored);
      if ((state.ignored?.count ?? 0) === before) onEvent(stored.event, state);
      if (isTerminal(state)) break;
    }
  } finally {
    iter.stop();
  }
  return state;
}
