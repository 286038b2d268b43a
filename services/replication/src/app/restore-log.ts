import type { StreamConfig } from "@nats-io/jetstream";
import { headers, type MsgHdrs } from "@nats-io/transport-node";
import type { BackupMessage, BackupStream } from "#schemas/replication.js";
import { isStreamNotFound, isWrongLastSequence } from "#common/event-sourcing/jetstream-errors.js";
import type { Nats } from "#common/nats.js";
import { ORIG_MSG_ID_HEADER, ORIG_SEQ_HEADER, ORIG_TIME_HEADER, payloadBytes } from "../domain/backup/format.js";
import { RestoreInterferenceError, RestoreTargetNotEmptyError } from "../domain/errors.js";
import { scanBackup } from "../infra/backup-file.js";
import { withNats } from "../infra/nats-session.js";
import { replicationLogger, type LogOption } from "./logging.js";

export interface RestoreLogOptions extends LogOption {
  /** Backup file written by `dwcp backup`. */
  in: string;
  /** Replicas for streams that restore-log creates. Default: as in the backup. */
  replicas?: number;
}

export interface RestoreLogSummary {
  file: string;
  messages: number;
  streams: Array<{ name: string; messages: number; firstSeq: number; lastSeq: number }>;
  seconds: number;
}

/** Publishes this many messages before waiting for the oldest ack. */
const WINDOW = 512;

/** Only what defines the stream's behaviour; mirrors and sources come back as plain streams. */
const KEEP = [
  "subjects",
  "retention",
  "storage",
  "max_consumers",
  "max_msgs",
  "max_bytes",
  "max_age",
  "max_msg_size",
  "max_msgs_per_subject",
  "discard",
  "num_replicas",
  "duplicate_window",
  "allow_direct",
  "allow_rollup_hdrs",
  "deny_delete",
  "deny_purge",
];

function configOf(s: BackupStream, replicas: number | undefined): Partial<StreamConfig> & { name: string } {
  const cfg: Record<string, unknown> = { name: s.name };
  for (const k of KEEP) if (s.config[k] !== undefined) cfg[k] = s.config[k];
  if (replicas !== undefined) cfg["num_replicas"] = replicas;
  return cfg as Partial<StreamConfig> & { name: string };
}

/**
 * Server directives (Nats-Msg-Id, Nats-Expected-*, Nats-Rollup, ...) are dropped: an expected
 * sequence from the old stream means nothing here, and a msgID seen twice in the original more
 * than a duplicate window apart would be silently dropped when both are published within seconds.
 * The original msgID, sequence and timestamp travel as Dwcp-Orig-* headers instead.
 */
export function restoredHeaders(m: BackupMessage): MsgHdrs {
  const h = headers();
  let hadSeq = false;
  let hadTime = false;
  for (const [k, v] of m.headers ?? []) {
    if (k.toLowerCase() === "nats-msg-id") h.append(ORIG_MSG_ID_HEADER, v);
    if (k.toLowerCase().startsWith("nats-")) continue;
    hadSeq ||= k === ORIG_SEQ_HEADER;
    hadTime ||= k === ORIG_TIME_HEADER;
    h.append(k, v);
  }
  if (!hadSeq) h.append(ORIG_SEQ_HEADER, String(m.seq));
  if (!hadTime) h.append(ORIG_TIME_HEADER, m.ts);
  return h;
}

async function prepareStreams(nats: Nats, streams: BackupStream[], replicas?: number): Promise<Map<string, number>> {
  const base = new Map<string, number>();
  for (const s of streams) {
    try {
      const info = await nats.jsm.streams.info(s.name);
      if (info.state.messages > 0) throw new RestoreTargetNotEmptyError(s.name, info.state.messages);
      base.set(s.name, info.state.last_seq);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      base.set(s.name, -1);
    }
  }
  for (const s of streams) {
    const cfg = configOf(s, replicas);
    if (base.get(s.name) === -1) await nats.jsm.streams.add(cfg);
    else await nats.jsm.streams.update(s.name, cfg);
    base.set(s.name, (await nats.jsm.streams.info(s.name)).state.last_seq);
  }
  return base;
}

/**
 * Imports a backup into streams that are empty or absent. The whole file is verified first (a
 * truncated or altered backup imports nothing). Each publish expects the stream's previous
 * sequence, so a writer racing the import stops it instead of interleaving. Sequence numbers in
 * the target start after its last sequence and have no gaps: the originals are kept in
 * Dwcp-Orig-Seq, which replay uses for --until-seq.
 */
export async function restoreLogWith(nats: Nats, opts: RestoreLogOptions): Promise<RestoreLogSummary> {
  const started = Date.now();
  const log = replicationLogger(opts, { file: opts.in });
  try {
    const summary = await importBackup(nats, opts, started);
    log.info({ messages: summary.messages, streams: summary.streams, seconds: summary.seconds }, "log restored");
    return summary;
  } catch (err) {
    log.error({ err }, "restore-log failed");
    throw err;
  }
}

async function importBackup(nats: Nats, opts: RestoreLogOptions, started: number): Promise<RestoreLogSummary> {
  const scan = await scanBackup(opts.in);
  const next = await prepareStreams(nats, scan.header.streams, opts.replicas);
  const first = new Map([...next].map(([k, v]) => [k, v + 1]));
  const inflight: Array<Promise<unknown>> = [];
  const publish = async (m: BackupMessage): Promise<void> => {
    const expected = next.get(m.stream) ?? 0;
    next.set(m.stream, expected + 1);
    const p = nats.js
      .publish(m.subject, payloadBytes(m), {
        headers: restoredHeaders(m),
        expect: { streamName: m.stream, lastSequence: expected },
        timeout: 30_000,
      })
      .catch((err: unknown) => {
        if (isWrongLastSequence(err)) throw new RestoreInterferenceError(m.stream, expected + 1, { cause: err });
        throw err;
      });
    p.catch(() => undefined); // observed below; keeps an early failure from being unhandled
    inflight.push(p);
    if (inflight.length >= WINDOW) await inflight.shift();
  };
  await scanBackup(opts.in, publish);
  await Promise.all(inflight);
  return {
    file: opts.in,
    messages: scan.count,
    streams: scan.header.streams.map((s) => ({
      name: s.name,
      messages: scan.perStream[s.name] ?? 0,
      firstSeq: first.get(s.name) ?? 0,
      lastSeq: next.get(s.name) ?? 0,
    })),
    seconds: (Date.now() - started) / 1000,
  };
}

/** `dwcp restore-log --in FILE [--replicas N]`. */
export const restoreLog = (natsUrl: string, opts: RestoreLogOptions): Promise<RestoreLogSummary> =>
  withNats(natsUrl, "dwcp-restore-log", (nats) => restoreLogWith(nats, opts));
