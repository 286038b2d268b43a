import { headers, type MsgHdrs } from "@nats-io/transport-node";
import type { BackupHeader, BackupMessage } from "#schemas/replication.js";
import { isStreamNotFound, isWrongLastSequence } from "#common/event-sourcing/jetstream-errors.js";
import { ensureLayout, ensureWorkStream } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { BackupPayloadInvalidError, UnknownStreamInBackupError } from "../domain/backup/errors.js";
import { ORIG_MSG_ID_HEADER, ORIG_SEQ_HEADER, ORIG_TIME_HEADER, payloadBytes } from "../domain/backup/format.js";
import { BackupCorruptError, RestoreInterferenceError, RestoreTargetNotEmptyError } from "../domain/errors.js";
import { scanBackup, type BackupScan } from "../infra/backup-file.js";
import { verifyBackupSignature, type BackupTrust } from "../infra/backup-signing.js";
import { withNats } from "../infra/nats-session.js";
import { dwcpStreamOf, problemOf, type DwcpStream } from "./backup-content.js";
import { replicationLogger, type LogOption } from "./logging.js";

export interface RestoreLogOptions extends LogOption {
  /** Backup file written by `dwcp backup`. */
  in: string;
  /**
   * The key the backup must be signed with (a public nkey, or the HMAC secret). Never the key the
   * file names: a file signed by any other key is refused.
   */
  trust?: BackupTrust;
  /** Accept an unsigned (version 1) backup, with a warning. Default false: refused. */
  allowUnsigned?: boolean;
  /**
   * Leave out messages whose payload fails its schema (junk that reached the log before it was
   * protected), each logged, instead of refusing the whole file. Default false. A foreign stream
   * is refused either way.
   */
  skipInvalid?: boolean;
  /**
   * Replicas for the streams restore-log creates. Default: the existing DWCP_EVT's (or DWCP_CMD's),
   * else 1; never the file's.
   */
  replicas?: number;
}

export interface RestoreLogSummary {
  file: string;
  messages: number;
  /** "unsigned" only for a version 1 file accepted with allowUnsigned. */
  signature: "signed" | "unsigned";
  /** Messages left out with skipInvalid: their payload failed its schema. */
  skipped: number;
  streams: Array<{ name: string; messages: number; firstSeq: number; lastSeq: number }>;
  seconds: number;
}

/** Publishes this many messages before waiting for the oldest ack. */
const WINDOW = 512;

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

/**
 * Read-only: refuses a target stream that holds messages; says which exist (with their replicas)
 * and which are absent (undefined).
 */
async function targetState(nats: Nats, names: string[]): Promise<Map<string, { replicas: number } | undefined>> {
  const state = new Map<string, { replicas: number } | undefined>();
  for (const name of names) {
    try {
      const info = await nats.jsm.streams.info(name);
      if (info.state.messages > 0) throw new RestoreTargetNotEmptyError(name, info.state.messages);
      state.set(name, { replicas: info.config.num_replicas });
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      state.set(name, undefined);
    }
  }
  return state;
}

/**
 * Creates or updates the backup's streams with the code's own configuration (ensureLayout), never
 * the file's; returns each stream's last sequence, after which the import appends.
 */
async function prepareStreams(
  nats: Nats,
  streams: Map<string, DwcpStream>,
  replicas?: number,
): Promise<Map<string, number>> {
  const target = await targetState(nats, [...streams.keys()]);
  const r = replicas ?? [...target.values()].find((t) => t !== undefined)?.replicas ?? 1;
  await ensureLayout(nats.nc, nats.jsm, { replicas: r });
  for (const s of streams.values()) if (s.kind === "work") await ensureWorkStream(nats.jsm, s.host, { replicas: r });
  const base = new Map<string, number>();
  for (const name of streams.keys()) base.set(name, (await nats.jsm.streams.info(name)).state.last_seq);
  return base;
}

/**
 * Reads the whole file without writing anything: lines, order, count and digest (scanBackup),
 * then the signature against the trusted key, then that every stream is one of dwcp's and every
 * message belongs to its stream and passes its schema. Problems found while reading are reported
 * after the signature check, so an altered file is named as such, whatever it holds.
 */
async function verifyBackup(opts: RestoreLogOptions): Promise<{
  scan: BackupScan;
  streams: Map<string, DwcpStream>;
  signature: "signed" | "unsigned";
  skipped: Set<string>;
}> {
  const file = opts.in;
  const streams = new Map<string, DwcpStream>();
  const skipped = new Set<string>();
  const log = replicationLogger(opts, { file });
  let first: Error | undefined;
  const onHeader = (h: BackupHeader): void => {
    for (const s of h.streams) {
      const kind = dwcpStreamOf(s.name);
      if (!kind) first ??= new UnknownStreamInBackupError(file, s.name);
      else if (streams.has(s.name)) first ??= new BackupCorruptError(file, 1, `stream ${s.name} is listed twice`);
      else streams.set(s.name, kind);
    }
  };
  const onMessage = (m: BackupMessage): void => {
    if (first) return;
    const kind = streams.get(m.stream);
    const problem = kind ? problemOf(kind, m) : "not one of dwcp's streams";
    if (problem === undefined) return;
    if (kind && opts.skipInvalid) {
      skipped.add(`${m.stream}:${m.seq}`);
      if (skipped.size <= 20) log.warn({ stream: m.stream, seq: m.seq, problem }, "invalid payload left out");
      return;
    }
    first = new BackupPayloadInvalidError(file, m.stream, m.seq, problem);
  };
  const scan = await scanBackup(file, onMessage, { onHeader });
  const signature = verifyBackupSignature(file, scan.header, scan.trailer, opts.trust, opts.allowUnsigned);
  if (first) throw first;
  if (skipped.size > 20) log.warn({ skipped: skipped.size }, "invalid payloads left out in all");
  return { scan, streams, signature, skipped };
}

/**
 * Imports a signed backup into streams that are empty or absent. Nothing is written before the
 * whole file is verified (verifyBackup): a truncated, altered, unsigned or foreign file imports
 * nothing. Streams are created with the code's configuration. Each publish expects the stream's
 * previous sequence, so a writer racing the import stops it instead of interleaving. Sequence
 * numbers in the target start after its last sequence and have no gaps: the originals are kept
 * in Dwcp-Orig-Seq, which replay uses for --until-seq.
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
  const log = replicationLogger(opts, { file: opts.in });
  const { scan, streams, signature, skipped } = await verifyBackup(opts);
  if (signature === "unsigned") log.warn("importing an UNSIGNED backup (--allow-unsigned): its origin is not proven");
  const next = await prepareStreams(nats, streams, opts.replicas);
  const first = new Map([...next].map(([k, v]) => [k, v + 1]));
  const inflight: Array<Promise<unknown>> = [];
  const changed = (n: number): BackupCorruptError =>
    new BackupCorruptError(opts.in, n, "the file changed during the import; restore into a fresh server");
  let n = 0;
  const publish = async (m: BackupMessage): Promise<void> => {
    n++;
    // The file is read twice: what the second read publishes must pass the same checks.
    const kind = streams.get(m.stream);
    const left = skipped.has(`${m.stream}:${m.seq}`);
    if (!kind || (problemOf(kind, m) !== undefined) !== left) throw changed(n + 1);
    if (left) return;
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
  const again = await scanBackup(opts.in, publish);
  await Promise.all(inflight);
  if (again.sha256 !== scan.sha256) throw changed(again.count + 2);
  return {
    file: opts.in,
    messages: scan.count - skipped.size,
    signature,
    skipped: skipped.size,
    streams: scan.header.streams.map((s) => ({
      name: s.name,
      messages: scan.perStream[s.name] ?? 0,
      firstSeq: first.get(s.name) ?? 0,
      lastSeq: next.get(s.name) ?? 0,
    })),
    seconds: (Date.now() - started) / 1000,
  };
}

/** `dwcp restore-log --in FILE [--trust-key PUBLIC_NKEY | --hmac-key FILE] [--allow-unsigned] [--replicas N]`. */
export const restoreLog = (natsUrl: string, opts: RestoreLogOptions): Promise<RestoreLogSummary> =>
  withNats(natsUrl, "dwcp-restore-log", (nats) => restoreLogWith(nats, opts));
