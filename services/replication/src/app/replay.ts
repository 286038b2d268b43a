import { stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { EVT_STREAM } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { EventVerifier, eventTrustSettings, INSECURE, type EventTrust } from "#common/signing.js";
import { BackupCorruptError } from "../domain/errors.js";
import {
  beyond,
  combineParts,
  ReplayFolder,
  type FoldParts,
  type ReplayBound,
  type ReplayView,
} from "../domain/replay/view.js";
import { nanosToMs, ORIG_SEQ_HEADER, ORIG_TIME_HEADER, payloadBytes } from "../domain/backup/format.js";
import { scanBackup, type BackupScan, type MessageHead } from "../infra/backup-file.js";
import { verifyBackupSignature, type BackupTrust } from "../infra/backup-signing.js";
import { decodeMsg, decodeRecord, decodeValue, headerReader, provenanceAt } from "../infra/decode.js";
import { readStream } from "../infra/log-reader.js";
import { withNats } from "../infra/nats-session.js";

export interface ReplayOptions {
  /** Include events up to this stream sequence (the original one, for a restored log). */
  untilSeq?: number;
  /** Include events recorded at or before this time (ISO string or Date). */
  untilTime?: string | Date;
  /** Only migrations of this VM and its replication. */
  vm?: string;
  /** Keep each transferred batch's chunk list in the view (FoldOptions.chunks). */
  chunks?: boolean;
  /**
   * How events' producers are checked, as the services fold them: with a deployment's trust file
   * only signed events from a producer allowed to make them are folded (the rest are listed as
   * ignored); insecure takes every event as it is. Default: the environment's (DWCP_TRUST_FILE,
   * DWCP_EVENTS_UNSIGNED), else insecure (in-process callers: tests, the drill).
   */
  trust?: ReplayTrust;
  /** replayBackup: the key the file must be signed with (as restore-log checks it). */
  backupTrust?: BackupTrust;
  /** replayBackup: fold a version 1 (unsigned) file; its origin is not proven. */
  allowUnsigned?: boolean;
}

/** How a replay checks producers; plain data, so partitions on worker threads rebuild it. */
export type ReplayTrust = { trustFile: string } | { insecure: true };

/** The EventTrust of a replay (ReplayOptions.trust). */
export function replayEventTrust(t: ReplayTrust | undefined, env = process.env): EventTrust {
  if (t !== undefined)
    return "insecure" in t ? INSECURE : { insecure: false, verifier: EventVerifier.fromTrustFile(t.trustFile) };
  const s = eventTrustSettings(env);
  if (s.unsigned || s.trustFile === undefined) return INSECURE;
  return { insecure: false, verifier: EventVerifier.fromTrustFile(s.trustFile) };
}

export const toBound = (o: ReplayOptions): ReplayBound => ({
  ...(o.untilSeq !== undefined ? { untilSeq: o.untilSeq } : {}),
  ...(o.untilTime !== undefined ? { untilTimeMs: new Date(o.untilTime).getTime() } : {}),
});

/** Folds DWCP_EVT up to the bound on an existing connection. Read-only: no durable state. */
export async function replayWith(nats: Nats, opts: ReplayOptions = {}): Promise<ReplayView> {
  const bound = toBound(opts);
  const folder = new ReplayFolder({ chunks: opts.chunks ?? false });
  const trust = replayEventTrust(opts.trust);
  await readStream(nats, EVT_STREAM, (m) => {
    const rec = decodeMsg(m, trust);
    if (beyond(bound, rec.seq, rec.timeMs)) return false;
    folder.add(rec);
    return true;
  });
  return folder.view(bound, opts.vm);
}

/** `dwcp replay`: the coordinator's view (migrations and replications) as of a point in the log. */
export const replay = (natsUrl: string, opts: ReplayOptions = {}): Promise<ReplayView> =>
  withNats(natsUrl, "dwcp-replay", (nats) => replayWith(nats, opts));

const header = (hs: Array<[string, string]> | undefined, name: string): string | undefined =>
  hs?.find(([k]) => k === name)?.[1];

/** Where a message stood in the original log: restore-log's headers, else its own seq and time. */
const position = (m: MessageHead): { seq: number; timeMs: number } => ({
  seq: Number(header(m.headers, ORIG_SEQ_HEADER) ?? m.seq),
  timeMs: nanosToMs(header(m.headers, ORIG_TIME_HEADER) ?? m.ts),
});

/** A partitioned replay's share of the aggregates: index `index` of `count`. */
export interface Partition {
  index: number;
  count: number;
}

/** FNV-1a of the subject: every event of an aggregate (one subject) lands in the same partition. */
export function partitionOf(subject: string, count: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < subject.length; i++) h = Math.imul(h ^ subject.charCodeAt(i), 0x01000193);
  return (h >>> 0) % count;
}

/**
 * Folds one partition of a backup's aggregates; every line's position is still seen, so the bound
 * cuts all partitions at the same record. Partition 0 checks the file's digest; every line is
 * parsed and checked whole by the partition that owns it, its signature by `opts.trust`. The
 * scan's header and trailer come back for the file's signature check (replayBackup).
 */
export async function foldBackup(
  file: string,
  opts: ReplayOptions = {},
  part: Partition = { index: 0, count: 1 },
): Promise<{ parts: FoldParts; scan: BackupScan }> {
  const bound = toBound(opts);
  const folder = new ReplayFolder({ chunks: opts.chunks ?? false });
  const trust = replayEventTrust(opts.trust);
  let done = false;
  const at = (m: MessageHead): { seq: number; timeMs: number } | undefined => {
    if (done || m.stream !== EVT_STREAM) return undefined;
    const p = position(m);
    if (beyond(bound, p.seq, p.timeMs)) done = true;
    return done ? undefined : p;
  };
  const scan = await scanBackup(
    file,
    (m) => {
      const p = at(m);
      if (!p) return;
      const by = provenanceAt(trust, m.subject, headerReader(m.headers), () => payloadBytes(m));
      folder.add(
        m.json !== undefined
          ? decodeValue(m.subject, m.json, p.seq, p.timeMs, by)
          : decodeRecord(m.subject, payloadBytes(m), p.seq, p.timeMs, by),
      );
    },
    part.count === 1
      ? {}
      : {
          only: (subject) => partitionOf(subject, part.count) === part.index,
          onOther: (m) => {
            const p = at(m);
            if (p) folder.pass(p.seq, p.timeMs);
          },
          digest: part.index === 0,
        },
  );
  return { parts: folder.parts(), scan };
}

/** Backups at least this big are folded in partitions on worker threads, one per core (up to 4). */
const PARTITIONED_MIN_BYTES = 64 << 20;
const MAX_PARTITIONS = 4;

/**
 * Folds a backup file instead of a live stream (`dwcp replay --backup FILE`): the file is verified
 * as it is read (lines, order, digest), then its signature against `opts.backupTrust` as
 * restore-log checks it; a corrupt, unsigned or foreign file fails without a view. A large file
 * is folded by aggregate partitions in parallel: aggregates are independent, so the views of
 * disjoint sets combine. `partitions` overrides the choice (1: on this thread alone).
 */
export async function replayBackup(file: string, opts: ReplayOptions = {}, partitions?: number): Promise<ReplayView> {
  const count = Math.max(
    1,
    partitions ??
      ((await stat(file)).size >= PARTITIONED_MIN_BYTES ? Math.min(availableParallelism(), MAX_PARTITIONS) : 1),
  );
  // The file's key stays on this thread: workers fold, partition 0 (here) checks the file.
  const { backupTrust, allowUnsigned, ...foldOpts } = opts;
  const others = Array.from({ length: count - 1 }, (_, i) => foldOnWorker(file, foldOpts, { index: i + 1, count }));
  // Every partition runs to its end even when another has failed: a worker may yet find a bad line
  // before the one reported here (a digest mismatch is reported at the trailer), and the error
  // must be the first bad line, as a single scan's would be.
  const mine = foldBackup(file, foldOpts, { index: 0, count });
  const all = await Promise.allSettled([mine.then((r) => r.parts), ...others.map((w) => w.result)]);
  await Promise.all(others.map((w) => w.stop()));
  const failed = all.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
  // Several partitions may refuse a bad file; report the first bad line, as a single scan would.
  const corrupt = failed
    .filter((e): e is BackupCorruptError => e instanceof BackupCorruptError)
    .sort((a, b) => a.line - b.line);
  if (failed.length > 0) throw corrupt[0] ?? failed[0];
  const { scan } = await mine;
  verifyBackupSignature(file, scan.header, scan.trailer, backupTrust, allowUnsigned ?? false);
  return combineParts(
    all.flatMap((r) => (r.status === "fulfilled" ? [r.value] : [])),
    toBound(opts),
    opts.vm,
  );
}

/** foldBackup of one partition on a worker thread (replay-worker.ts). */
function foldOnWorker(
  file: string,
  opts: ReplayOptions,
  part: Partition,
): { result: Promise<FoldParts>; stop(): Promise<number> } {
  // Compiled: the worker's own .js; from the sources (tests): an entry that registers tsx.
  const entry = import.meta.url.endsWith(".ts") ? "./replay-worker.mjs" : "./replay-worker.js";
  const w = new Worker(new URL(entry, import.meta.url), {
    workerData: { file, opts, part } satisfies ReplayJob,
  });
  const result = new Promise<FoldParts>((resolve, reject) => {
    w.once("message", (m: ReplayResult) => {
      if (m.ok) resolve(m.parts);
      else
        reject(
          m.corrupt
            ? new BackupCorruptError(m.corrupt.file, m.corrupt.line, m.corrupt.detail)
            : new Error(`replay partition ${part.index}: ${m.message}`),
        );
    });
    w.once("error", reject);
    w.once("exit", (code) => reject(new Error(`replay partition ${part.index} exited (${code}) without a result`)));
  });
  return { result, stop: () => w.terminate() };
}

/** What a replay worker is given, and what it answers. */
export interface ReplayJob {
  file: string;
  opts: ReplayOptions;
  part: Partition;
}
export type ReplayResult =
  | { ok: true; parts: FoldParts }
  | { ok: false; message: string; corrupt?: { file: string; line: number; detail: string } };
