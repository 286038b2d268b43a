import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import {
  ConnectAbortedError,
  ConnectFailedError,
  PeerIdentityMismatchError,
  TlsHandshakeError,
} from "#common/secure-link/errors.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import { closedAfterHandshake, dial, isCertificateRefusal, tlsFailureOf } from "#common/secure-link/transport.js";
import { hostIdentity } from "#common/pki.js";
import type { CompressionMode, TransferredChunk } from "#schemas/index.js";
import { sealed, zeroCopy } from "#native/index.js";
import { exportSealKeys, SEALED_LABEL_CLIENT_TO_SERVER } from "#common/secure-link/sealed.js";
import type { Logger } from "#common/logger.js";
import { isLoopbackAddress } from "#common/loopback-host.js";
import { parseAddress } from "../../domain/data-channel/address.js";
import { helloMac, helloNonce, migrationToken } from "../../domain/data-channel/auth.js";
import { RESUME_WINDOW_MS } from "../../domain/data-channel/resume.js";
import { linkRateFor, type CompressionChoice } from "../../domain/data-channel/compression.js";
import { batchProblem, chunkRange, streamsFor, stripeRuns, WAN_RTT_US } from "../../domain/data-channel/batch.js";
import { CLIENT_PREAUTH, CLIENT_REHELLO, CLIENT_SESSION, FrameDecoder } from "../../domain/data-channel/decoder.js";
import {
  DATA_ALPN,
  encodeControl,
  segmentBytes,
  type BatchBegin,
  type ControlFrame,
} from "../../domain/data-channel/frames.js";
import { BaseSums } from "../../domain/data-channel/base-sums.js";
import {
  newTokenBucket,
  setRate,
  UNLIMITED_BYTES_PER_SEC,
  type TokenBucket,
} from "../../domain/data-channel/token-bucket.js";
import { AuthFailedError, DestinationUnreachableError, ProtocolError, TransferAbortedError } from "../../errors.js";
import { batchBufferBytes, chunkBuffers } from "./buffer-pool.js";
import { ClientSession, emptyBreakdown, type ByteBreakdown, type Carried } from "./client-session.js";
import { SocketFrameReader } from "./frame-reader.js";
import { SourceVolume, type PreparedChunk } from "./source-volume.js";
import { linkKey, links, type Handoff, type Link } from "./link-pool.js";
import { compressionHere } from "./compression-here.js";
import { tuneSocket } from "./socket-tuning.js";
import { onLink, type LinkTurn } from "./link-scheduler.js";
export { setMigrationShare } from "./link-scheduler.js";
import { SealedWriter } from "./sealed-link.js";
import { exportedNonce, speaks11 } from "./revision.js";

export interface SendBatchOptions {
  /** Destination mover's data channel, host:port. */
  address: string;
  /** Cluster secret; only a MAC derived from it is sent. */
  secret: Buffer;
  /**
   * TLS 1.3 with mutual authentication: this mover's certificate, and the host the coordinator
   * named as the destination, whose certificate the peer at `address` must present (else
   * PeerIdentityMismatchError, and nothing is sent). Absent: plaintext (trusted links only).
   */
  tls?: { tls: LinkTls; destHost: string };
  sourceHost: string;
  migrationId: string;
  batch: number;
  attempt: number;
  /**
   * JetStream delivery count of the work item (1 = first delivery). With `attempt` it is the
   * fencing token: the destination refuses an older holder of the same batch. Default: not sent
   * (then, between equal attempts, the newest session wins).
   */
  delivery?: number;
  /** false: the destination skips reading the batch back after its fsync. Default true. */
  verify?: boolean;
  /** Source volume, already confined to this mover's roots by the caller. */
  sourcePath: string;
  /**
   * The roots `sourcePath` was confined to: the source is opened beneath the root's held fd, no
   * symlink followed. The mover always passes them; without them only a final symlink is refused.
   */
  sourceRoots?: readonly string[];
  destDir: string;
  destName: string;
  volumeSizeBytes: number;
  chunkSizeBytes: number;
  firstChunk: number;
  chunkCount: number;
  /**
   * Cap on bytes written to the socket per second (frame headers included), for all batches of
   * this migration that this process sends at once (per sending mover). Default: none.
   */
  bandwidthLimitBytesPerSec?: number;
  /**
   * The rate of the link from this mover to the destination (bytes per second on the wire), as
   * the operator knows it (DWCP_LINK_RATE): set, every batch to the destination takes turns on
   * it by its migration's priority and weight. Default: unknown, no turns.
   */
  linkRateBytesPerSec?: number;
  /** The migration's share of the link among equal priorities (1..1000). Default 1. */
  weight?: number;
  /** The migration's order on the link: higher first (-100..100). Default 0. */
  priority?: number;
  signal?: AbortSignal;
  /** Called as each chunk is acknowledged (written and verified at the destination). */
  onChunk?: (c: TransferredChunk) => void;
  /**
   * Called once, when every chunk of the batch (of every stripe) has been handed to the kernel:
   * from then on the batch only waits for its acknowledgements (and sends what the destination
   * asks for again), while its last bytes are still crossing the link. The mover starts its next
   * batch then, so a long link stays full between batches.
   */
  onSent?: () => void;
  log: Logger;
  /** Default 10000 ms. */
  connectTimeoutMs?: number;
  /** No traffic in either direction for this long fails the batch. Default 60000 ms. */
  idleTimeoutMs?: number;
  /** Resends of a chunk the destination saw corrupted before the batch fails. Default 3. */
  maxResends?: number;
  /**
   * Use the native module's I/O when it is loaded: sendfile() for segment bytes in plaintext,
   * sealed records (offered in HELLO) on TLS. Default true; false keeps a TLS link in Node's TLS.
   */
  zeroCopy?: boolean;
  /**
   * Chunk compression (kept per chunk where it shrinks the chunk by >= 10%; a spread 64 KiB sample
   * decides first). auto (the default): none, LZ4 or a zstd level from the link's rate (the
   * bandwidth limit, else the fastest rate a batch to this destination reached, else a guess from
   * the RTT) and the CPU this host can spare (see domain/data-channel/compression.ts).
   */
  compression?: CompressionMode;
  /**
   * Connections to stripe the batch over (1..MAX_STREAMS). Default: DEFAULT_WAN_STREAMS when the
   * link's smallest RTT (TCP_INFO) says WAN (>= 2 ms), else 1 (also without the native module).
   */
  streams?: number;
  /**
   * The destination may hold an earlier copy of the volume under its final name (the base): each
   * non-zero chunk goes first as a BASE reference, with its data only where the base differs.
   * Default false.
   */
  incremental?: boolean;
  /**
   * Once every chunk of a run is written, lend its link to the next batch of the migration (see
   * LinkPool.lend). Default: on a link whose RTT says WAN (>= 2 ms), where a new connection, or
   * one left idle, starts with a small congestion window.
   */
  lendLink?: boolean;
  /** Set by sendBatch on each stripe of a striped batch (see BatchBegin.stripe). */
  stripe?: string;
  /** Set by sendBatch on each run: called when the run has written its last chunk (see onSent). */
  onWritten?: () => void;
  /** Set by sendBatch: the codec and level its chunks are compressed with. */
  codec?: CompressionChoice;
  /**
   * After a dropped connection, how long (from the drop) the run keeps reconnecting to resume
   * at its first unacknowledged chunk before the batch fails. Default RESUME_WINDOW_MS.
   */
  resumeWindowMs?: number;
}

export interface SendBatchResult {
  /** Acknowledged chunks in offset order. */
  chunks: TransferredChunk[];
  /** Logical bytes of the batch (zero chunks included). */
  bytes: number;
  /** Every byte this side wrote to the socket: frame headers, segment tables, resends, handshake. */
  wireBytes: number;
  /** The logical bytes by what became of them: zero-skipped, data, compressed in and out. */
  breakdown: ByteBreakdown;
  /** The codec the batch's chunks were compressed with ("none": sent as they are). */
  compression: CompressionChoice;
  durationMs: number;
}

/**
 * Send one batch (a run of chunks of one volume) to a destination mover and resolve only after
 * its BATCH_OK, i.e. once the destination has verified, written and fsynced every chunk.
 */
export async function sendBatch(o: SendBatchOptions): Promise<SendBatchResult> {
  const started = performance.now();
  const problem = batchProblem(beginOf(o));
  if (problem !== undefined) throw new RangeError(`sendBatch: ${problem}`);
  if (o.signal?.aborted === true) throw aborted(o.signal);
  const log = o.log.child({ migrationId: o.migrationId, batch: o.batch, attempt: o.attempt, host: o.sourceHost });
  const source = await SourceVolume.open(o.sourcePath, o.volumeSizeBytes, o.sourceRoots);
  try {
    const key = keyOf(o);
    const kept = links.take(key, o.migrationId);
    const first = kept ?? (await openLink(o, log));
    // The HELLO round trip is no RTT measure on a busy host (it includes both processes'
    // scheduling): without TCP_INFO a batch is striped only when the migration says so.
    const n = streamsFor(o.streams, first.tuning, o.chunkCount);
    const codec = await compressionFor(o, first);
    const sessions = await sendStripes(
      { ...o, codec, onSent: once(o.onSent) },
      n,
      source,
      key,
      { link: first, reused: kept !== undefined },
      log,
    );
    const chunks = sessions.flatMap((s) => [...s.acked.values()]).sort((a, b) => a.offset - b.offset);
    const result: SendBatchResult = {
      chunks,
      bytes: chunks.reduce((sum, c) => sum + c.length, 0),
      wireBytes: sessions.reduce((sum, s) => sum + s.wireBytes, 0),
      breakdown: sumBreakdowns(sessions.map((s) => s.bytes)),
      compression: codec,
      durationMs: performance.now() - started,
    };
    links.noteRate(o.address, result.wireBytes, result.durationMs);
    log.info(
      {
        bytes: result.bytes,
        wireBytes: result.wireBytes,
        ...result.breakdown,
        codec: codec.codec,
        level: codec.level,
        durationMs: Math.round(result.durationMs),
        streams: n,
        incremental: o.incremental === true,
      },
      "batch sent",
    );
    return result;
  } finally {
    await source.close();
  }
}

/**
 * The codec for a batch: the migration's mode, decided from the link's rate (linkRateFor: the
 * bandwidth limit, or the fastest rate a batch to this destination reached, which on loopback
 * says nothing of a link), its RTT and the cores this host can spare right now.
 */
async function compressionFor(o: SendBatchOptions, link: Link): Promise<CompressionChoice> {
  return compressionHere(o.compression ?? "auto", {
    bytesPerSec: linkRateFor({
      limitBytesPerSec: o.bandwidthLimitBytesPerSec,
      measuredBytesPerSec: links.rateOf(o.address),
      loopback: isLoopbackAddress(link.socket.remoteAddress),
    }),
    rttUs: link.tuning?.rttUs,
  });
}

function sumBreakdowns(parts: readonly ByteBreakdown[]): ByteBreakdown {
  return parts.reduce(
    (a, b) => ({
      zeroSkipped: a.zeroSkipped + b.zeroSkipped,
      data: a.data + b.data,
      packedIn: a.packedIn + b.packedIn,
      packedOut: a.packedOut + b.packedOut,
      baseReused: a.baseReused + b.baseReused,
    }),
    emptyBreakdown(),
  );
}

/**
 * The batch over `n` connections: contiguous runs of its chunks, each a BATCH_BEGIN of its own
 * with a shared stripe id (the destination lets them hold the batch together), all in parallel.
 * The first failure stops the other stripes and is what the batch fails with.
 */
async function sendStripes(
  o: SendBatchOptions,
  n: number,
  source: SourceVolume,
  key: string,
  first: { link: Link; reused: boolean },
  log: Logger,
): Promise<ClientSession[]> {
  if (n <= 1) return [await sendRun({ ...o, onWritten: o.onSent }, source, key, first, log)];
  const stripe = randomBytes(12).toString("base64url");
  const stop = new AbortController();
  const onAbort = (): void => stop.abort(o.signal?.reason);
  o.signal?.addEventListener("abort", onAbort, { once: true });
  const errors: unknown[] = [];
  try {
    const runs = stripeRuns(o.firstChunk, o.chunkCount, n);
    let unwritten = runs.length;
    const written = (): void => {
      unwritten -= 1;
      if (unwritten === 0) o.onSent?.();
    };
    const sessions = await Promise.all(
      runs.map((r, i) =>
        sendRun(
          { ...o, ...r, stripe, signal: stop.signal, onWritten: once(written) },
          source,
          key,
          i === 0 ? first : undefined,
          log,
        ).catch((err: unknown) => {
          errors.push(err);
          stop.abort(err);
          return undefined;
        }),
      ),
    );
    if (errors.length > 0) throw errors[0];
    return sessions as ClientSession[];
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * How long a data link's sent bytes may go unacknowledged before the kernel drops it
 * (TCP_USER_TIMEOUT), so that the run resumes on a new connection. After an outage of the path,
 * TCP retransmits on a timer that doubled through the outage (tens of seconds after a 30 s cut)
 * and the link stayed silent until the idle timeout; a new connection is tried every few seconds
 * (RESUME_BACKOFF_MS) and carries on as soon as the path is back.
 */
export const UNACKED_TIMEOUT_MS = 15_000;

/** Pauses between reconnection attempts of a dropped run: 0.5 s, doubling, at most 5 s. */
const RESUME_BACKOFF_MS = { first: 500, max: 5_000 } as const;

/**
 * One run of chunks (the whole batch, or one stripe) on one link: `given`, else a kept one, else
 * a new one. The link goes back to the pool after a clean BATCH_OK. A kept link the destination
 * dropped while idle (restart, timeout, a cut) fails the first write or read before any answer:
 * the run starts again once on a fresh connection, resuming if it had written chunks on the kept
 * one (a link cut by an outage also fails before any answer, after the destination committed some).
 *
 * A connection that drops mid-run (reset, idle timeout) is resumed: the run reconnects (for up
 * to resumeWindowMs, backing off) and sends BATCH_BEGIN with `resume`; the destination answers
 * with the run's committed prefix (RESUME_AT), which may be longer than what was acknowledged
 * here (an acknowledgement lost with the connection), and only the rest crosses the link again.
 * A later delivery of the work item (this mover was restarted, or stalled past the ack wait)
 * asks the same on its first connection. A destination that restarted knows nothing: prefix 0.
 */
async function sendRun(
  o: SendBatchOptions,
  source: SourceVolume,
  key: string,
  given: { link: Link; reused: boolean } | undefined,
  log: Logger,
): Promise<ClientSession> {
  let link = given?.link ?? links.take(key, o.migrationId);
  let reused = given?.reused ?? link !== undefined;
  let carried: Carried | undefined;
  let dropped: { at: number; pauseMs: number } | undefined;
  const canResume = (err: unknown): boolean =>
    err instanceof DestinationUnreachableError &&
    !isAborted(o.signal) &&
    dropped !== undefined &&
    performance.now() - dropped.at < (o.resumeWindowMs ?? RESUME_WINDOW_MS);
  const pause = async (): Promise<void> => {
    const d = dropped as { pauseMs: number };
    await sleep(d.pauseMs, undefined, { signal: o.signal }).catch(() => undefined);
    d.pauseMs = Math.min(RESUME_BACKOFF_MS.max, d.pauseMs * 2);
  };
  for (;;) {
    try {
      link ??= await openLink(o, log);
    } catch (err) {
      if (!canResume(err)) throw err;
      await pause();
      continue;
    }
    link.batches += 1;
    const attempt: { session?: ClientSession; handedOver?: boolean } = {};
    // A first delivery's first connection has nothing to resume: it sends at once.
    const resume = carried !== undefined || (o.delivery ?? 1) > 1;
    // Lent by a batch still finishing on it: that link was busy, not idle, when it failed.
    const lent = link.after !== undefined;
    try {
      if (link.migrationId !== o.migrationId) rehello(o, link);
      const session = await onLink(o.address, o.linkRateBytesPerSec, o.migrationId, o, (linkTurn) =>
        withBucket(o, (limit) =>
          run({ ...o, resume }, { link: link as Link, key }, source, { ...limit, linkTurn }, log, attempt, carried),
        ),
      );
      // A kept link costs the destination an fd, not a pool thread: its reader waits for the
      // next batch on the event loop (Node's TLS, or PoolFrameReader for native reads). A link
      // lent to the next batch of the migration is that batch's now.
      if (attempt.handedOver !== true) links.give(key, link, log);
      return session;
    } catch (err) {
      link.socket.destroy();
      const untouched = attempt.session === undefined || attempt.session.replies === 0;
      if (reused && untouched && err instanceof DestinationUnreachableError && !isAborted(o.signal)) {
        // The link may have failed in an outage rather than closed while idle: what this run
        // wrote on it may have been committed without an answer, so the fresh connection resumes.
        const wrote = attempt.session?.carry();
        if (wrote !== undefined && wrote.sent.size > 0) carried = wrote;
        // A lent link fails with the batch before it, as in an outage: reconnecting goes on for
        // the resume window, as for a link dropped mid-run.
        if (lent) dropped ??= { at: performance.now(), pauseMs: RESUME_BACKOFF_MS.first };
        log.info({ reason: err.message, resume: carried !== undefined }, "kept data link was gone; reconnecting");
        link = undefined;
        reused = false;
        continue;
      }
      link = undefined;
      reused = false;
      if (err instanceof DestinationUnreachableError && attempt.session !== undefined && !isAborted(o.signal)) {
        dropped ??= { at: performance.now(), pauseMs: RESUME_BACKOFF_MS.first };
        carried = attempt.session.carry();
      }
      if (!canResume(err)) throw err;
      log.warn(
        { reason: (err as Error).message, acknowledged: carried?.acked.size ?? 0, of: o.chunkCount },
        "data link dropped mid-run; resuming at the first chunk the destination has not committed",
      );
      await pause();
    }
  }
}

/**
 * After RESUME_AT: how many chunks of the run's committed prefix this side confirms, adopting
 * each into the session. A chunk counts when its CRC32C matches this side's record of it (sent
 * or acknowledged on an earlier connection) or, with no record (an earlier process sent it), the
 * chunk read again from the source; the first mismatch ends the prefix and is sent again.
 */
async function adoptCommitted(
  o: SendBatchOptions,
  session: ClientSession,
  source: SourceVolume,
  carried: Carried | undefined,
): Promise<number> {
  const crcs = await session.resumePoint();
  let buffer: Buffer | undefined;
  try {
    for (const [i, crc] of crcs.entries()) {
      const offset = (o.firstChunk + i) * o.chunkSizeBytes;
      const known = carried?.acked.get(offset) ?? carried?.sent.get(offset);
      const counts = carried?.counts.get(offset);
      if (known !== undefined && counts !== undefined) {
        if (known.crc32c !== crc) return i;
        session.adopt(known, counts);
        continue;
      }
      buffer ??= chunkBuffers.take(batchBufferBytes(o));
      const { length } = chunkRange(o.volumeSizeBytes, o.chunkSizeBytes, o.firstChunk + i);
      const c = await source.prepare(offset, length, buffer);
      if (c.crc32c !== crc) return i;
      const data = segmentBytes(c.segments);
      session.adopt(
        { offset, length, crc32c: c.crc32c, zero: c.zero, wireBytes: 0, blake3: c.blake3 },
        { zeroSkipped: length - data, data, packedIn: 0, packedOut: 0, baseReused: 0 },
      );
    }
    return crcs.length;
  } finally {
    if (buffer !== undefined) chunkBuffers.give(buffer);
  }
}

/** Distinct TLS configurations get distinct links (tests use several in one process). */
const tlsIds = new WeakMap<LinkTls, number>();
let nextTlsId = 1;

function keyOf(o: SendBatchOptions): string {
  let tlsId = 0;
  if (o.tls !== undefined) {
    tlsId = tlsIds.get(o.tls.tls) ?? nextTlsId++;
    tlsIds.set(o.tls.tls, tlsId);
  }
  return linkKey({
    address: o.address,
    destHost: o.tls?.destHost,
    sourceHost: o.sourceHost,
    secret: o.secret,
    tlsId,
  });
}

/** Close the idle data links this process keeps (mover shutdown). */
export function closeIdleLinks(): void {
  links.closeAll();
}

/** The BATCH_BEGIN this batch announces (also what a local copy claims and writes under). */
export function beginOf(o: SendBatchOptions & { resume?: boolean }): BatchBegin {
  const { migrationId, batch, attempt, destDir, destName, volumeSizeBytes, chunkSizeBytes, firstChunk, chunkCount } = o;
  const begin: BatchBegin = {
    migrationId,
    batch,
    attempt,
    destDir,
    destName,
    volumeSizeBytes,
    chunkSizeBytes,
    firstChunk,
    chunkCount,
  };
  if (o.delivery !== undefined) begin.delivery = o.delivery;
  if (o.verify === false) begin.verify = false;
  if (o.stripe !== undefined) begin.stripe = o.stripe;
  if (o.resume === true) begin.resume = true;
  if (o.incremental === true) begin.incremental = true;
  return begin;
}

/**
 * A capped migration's batches from this process share one token bucket, and take turns on it:
 * a batch connects and authenticates at once, but sends its chunks only after the batch ahead of
 * it has sent its last one. Sharing the bucket at the same time made concurrent batches finish
 * together and left the link idle while the next ones set up (several round trips on a WAN
 * link); in turns, the next batch's setup overlaps the current one's data.
 */
interface SharedLimit {
  bucket: TokenBucket;
  users: number;
  /** Settles when the batch currently sending (or last queued) has sent its last chunk. */
  turn: Promise<void>;
}

const buckets = new Map<string, SharedLimit>();

/**
 * Migrations with uncapped batches sending from this process: a limit set while they run
 * (setMigrationLimit) gives them a bucket, which they share without taking turns.
 */
const uncapped = new Map<string, { users: number; bucket?: TokenBucket }>();

/** What run() gets: the migration's bucket as of now (none: uncapped), and a way to send in turn. */
interface Limit {
  bucket: () => TokenBucket | undefined;
  /** The link's turn for each chunk (undefined: none). */
  linkTurn?: LinkTurn | undefined;
  inTurn<T>(fn: () => Promise<T>): Promise<T>;
}

async function withBucket<T>(o: SendBatchOptions, fn: (limit: Limit) => Promise<T>): Promise<T> {
  const rate = o.bandwidthLimitBytesPerSec;
  // One entry per migration: a batch carrying an older limit joins the one setMigrationLimit retuned.
  const key = o.migrationId;
  if (rate === undefined) {
    const free = uncapped.get(key) ?? { users: 0 };
    free.users += 1;
    uncapped.set(key, free);
    try {
      return await fn({ bucket: () => free.bucket, inTurn: (send) => send() });
    } finally {
      free.users -= 1;
      if (free.users === 0) uncapped.delete(key);
    }
  }
  const shared = buckets.get(key) ?? {
    bucket: newTokenBucket(rate, performance.now()),
    users: 0,
    turn: Promise.resolve(),
  };
  shared.users += 1;
  buckets.set(key, shared);
  const inTurn = async <R>(send: () => Promise<R>): Promise<R> => {
    const ahead = shared.turn;
    let done = (): void => undefined;
    shared.turn = new Promise<void>((resolve) => {
      done = resolve;
    });
    try {
      await ahead;
      return await send();
    } finally {
      done();
    }
  };
  try {
    return await fn({ bucket: () => shared.bucket, inTurn });
  } finally {
    shared.users -= 1;
    if (shared.users === 0) buckets.delete(key);
  }
}

/**
 * A running migration's new bandwidth limit (undefined: none) for its batches sending from this
 * process now: capped ones' shared bucket takes the new rate, uncapped ones get a bucket (or lose
 * it), from their next chunk on. Batches that start later carry the limit in their options.
 */
export function setMigrationLimit(migrationId: string, bytesPerSec: number | undefined): void {
  const now = performance.now();
  const shared = buckets.get(migrationId);
  if (shared !== undefined) setRate(shared.bucket, bytesPerSec ?? UNLIMITED_BYTES_PER_SEC, now);
  const free = uncapped.get(migrationId);
  if (free === undefined) return;
  if (bytesPerSec === undefined) delete free.bucket;
  else if (free.bucket === undefined) free.bucket = newTokenBucket(bytesPerSec, now);
  else setRate(free.bucket, bytesPerSec, now);
}

const isAborted = (signal: AbortSignal | undefined): boolean => signal?.aborted === true;

const aborted = (signal: AbortSignal): TransferAbortedError =>
  new TransferAbortedError("batch transfer was aborted", { cause: signal.reason });

async function run(
  o: SendBatchOptions & { resume?: boolean },
  on: { link: Link; key: string },
  source: SourceVolume,
  limit: Limit,
  log: Logger,
  attempt: { session?: ClientSession; handedOver?: boolean },
  carried?: Carried,
): Promise<ClientSession> {
  const { link } = on;
  const { socket, reader, encrypted } = link;
  const { linkTurn } = limit;
  // Taken while the batch before was finishing on it: write behind its BATCH_END.
  const before = link.after;
  if (before !== undefined) log.debug("batch goes behind the batch before on its link");
  if (before !== undefined && !(await before.written))
    throw new DestinationUnreachableError(`data channel to ${o.address}: the batch before on this link failed`);
  // Revision 1.1: an incremental batch asks for its base's digests ahead (see BaseSums).
  const sums = o.incremental === true && speaks11(socket) ? sumsOf(link, o) : undefined;
  const session = new ClientSession({
    socket,
    reader,
    encrypted,
    ...(sums === undefined ? {} : { baseSums: sums.view }),
    onBaseSums: (f) => onBaseSums(link, f),
    sealer: link.sealer,
    chunkCount: o.chunkCount,
    maxResends: o.maxResends ?? 3,
    // Over TLS the socket's fd carries ciphertext: no sendfile(), and large writes one by one.
    sendfileFrom: (o.zeroCopy ?? true) && zeroCopy.available && !encrypted ? source.fd : undefined,
    bucket: limit.bucket,
    linkTurn: linkTurn === undefined ? undefined : pausingIdle(linkTurn, socket, o.idleTimeoutMs ?? 60_000),
    compression: o.codec ?? { codec: "none", level: 0 },
    onChunk: o.onChunk,
    incremental: o.incremental === true,
    ...(carried === undefined ? {} : { carried }),
    log,
  });
  attempt.session = session;
  link.owner = session;
  const lending = lendingOf(o, on, log);
  // The link's first batch carries the handshake's bytes.
  session.wireBytes += link.pendingWireBytes;
  link.pendingWireBytes = 0;
  const idleMs = o.idleTimeoutMs ?? 60_000;
  const onIdle = (): void =>
    session.fail(new DestinationUnreachableError(`no traffic from ${o.address} for ${idleMs} ms`));
  socket.setTimeout(idleMs, onIdle);
  const onAbort = (): void => session.fail(aborted(o.signal as AbortSignal));
  o.signal?.addEventListener("abort", onAbort, { once: true });
  if (o.signal?.aborted === true) onAbort();
  const guard = (p: Promise<void>): Promise<void> => p.catch((err: unknown) => session.fail(toError(err)));
  // A kept link's HELLO for this migration (rehello) goes first; its AUTH_OK precedes our replies.
  const rehelloFrame = link.hello;
  link.hello = undefined;
  try {
    if (rehelloFrame !== undefined) await guard(session.hold(rehelloFrame));
    const begin = beginOf(o);
    if (sums !== undefined) begin.baseSums = sums.id;
    // Unless its answer is awaited (RESUME_AT, BASE_SUMS), BATCH_BEGIN goes with the first chunk.
    const awaitsAnswer = o.resume === true || sums !== undefined;
    await guard(
      awaitsAnswer
        ? session.sendControl({ kind: "BATCH_BEGIN", begin })
        : session.holdControl({ kind: "BATCH_BEGIN", begin }),
    );
    session.check();
    const send = async (): Promise<void> => {
      const from = o.resume === true ? await adoptCommitted(o, session, source, carried) : 0;
      if (from > 0)
        log.info({ committed: from, of: o.chunkCount }, "run resumes after the destination's committed chunks");
      await sendChunks({ ...o, from, log, onWritten: lending.onWritten, endEarly: lending.endsEarly }, session, source);
      lending.written(true);
    };
    // The replies of the batch before come first on a lent link.
    const replies = async (): Promise<void> => {
      if (before !== undefined && !(await before.answered))
        throw new DestinationUnreachableError(`data channel to ${o.address}: the batch before on this link failed`);
      link.after = undefined;
      if (rehelloFrame !== undefined) await helloAnswer(o, reader, false);
      await readReplies(session, reader);
      lending.answered(true);
    };
    // Waiting for our turn is not idleness: the timer is off until our first chunk goes out.
    const inTurn = (l: Limit): Promise<void> => {
      socket.setTimeout(0);
      return l.inTurn(async () => {
        socket.setTimeout(idleMs);
        await send();
      });
    };
    await Promise.all([guard(replies()), guard(inTurn(limit))]);
    session.check();
    return session;
  } finally {
    attempt.handedOver = lending.end();
    o.signal?.removeEventListener("abort", onAbort);
    // A borrower that has the link now keeps its idle timer.
    if (link.owner === session) {
      socket.setTimeout(0);
      link.owner = undefined;
    }
    socket.off("timeout", onIdle);
  }
}

/** The link's BASE_SUMS of `o`'s volume: those it has, or a new id for them. */
function sumsOf(link: Link, o: SendBatchOptions): { id: number; view: BaseSums } {
  const key = [o.destDir, o.destName, o.volumeSizeBytes, o.chunkSizeBytes].join("\0");
  if (link.sums?.key === key) return link.sums;
  const id = link.sumsAsked ?? 0;
  link.sumsAsked = id + 1;
  link.sums = { id, key, view: new BaseSums(o.chunkSizeBytes) };
  return link.sums;
}

/** A BASE_SUMS frame read on `link`: into its volume's sums, or dropped (an earlier volume's). */
function onBaseSums(link: Link, f: Extract<ControlFrame, { kind: "BASE_SUMS" }>): void {
  if (f.id >= (link.sumsAsked ?? 0)) throw new ProtocolError(`BASE_SUMS ${f.id}, which this side never asked for`);
  if (link.sums === undefined || link.sums.id !== f.id) return;
  const problem = link.sums.view.add(f.offset, f.sums);
  if (problem !== undefined) throw new ProtocolError(problem);
}

/**
 * A run's lending of its link (LinkPool.lend): on a long link, once every chunk is written
 * (`onWritten`, before the next batch is started), the next batch of the migration may take the
 * link and write behind this run's BATCH_END (`written`), reading its replies after this run's
 * BATCH_OK (`answered`). `end` settles both (false unless already true) and says whether the
 * link was taken.
 *
 * `endsEarly`: the run sends BATCH_END right after its last chunk instead of after their
 * acknowledgements (in the same write as the last chunk, see sendChunks), so that the next
 * batch's bytes follow without a round trip of silence on the link, and a small batch costs
 * one write and one round trip. On every encrypted link (TLS, sealed records), lent or not:
 * there bytes altered in transit fail their authentication and cut the link, so no chunk will
 * be asked for again (a CRC32C mismatch after BATCH_END fails the batch for a retry, see
 * ClientSession). An incremental batch first waits for the answers to the references that may
 * ask for data (those the base's sums did not cover, see ClientSession.mayEndEarly) and sends
 * that data.
 */
function lendingOf(
  o: SendBatchOptions,
  on: { link: Link; key: string },
  log: Logger,
): {
  endsEarly: boolean;
  onWritten: () => void;
  written: (ok: boolean) => void;
  answered: (ok: boolean) => void;
  end: () => boolean;
} {
  let written = (_: boolean): void => undefined;
  let answered = (_: boolean): void => undefined;
  const handoff: Handoff = {
    written: new Promise((r) => (written = r)),
    answered: new Promise((r) => (answered = r)),
  };
  let withdraw: (() => boolean) | undefined;
  const lend = o.lendLink ?? (on.link.tuning?.rttUs ?? 0) >= WAN_RTT_US;
  return {
    endsEarly: on.link.encrypted,
    onWritten: () => {
      if (lend && !on.link.socket.destroyed) {
        withdraw = links.lend(on.key, on.link, o.migrationId, handoff);
        log.debug({ rttUs: on.link.tuning?.rttUs }, "data link lent to the next batch");
      }
      o.onWritten?.();
    },
    written,
    answered,
    end: () => {
      written(false);
      answered(false);
      return withdraw !== undefined && !withdraw();
    },
  };
}

/** Waiting for a turn on a busy link is not idleness: the idle timer is off meanwhile. */
function pausingIdle(turn: LinkTurn, socket: Socket, idleMs: number): LinkTurn {
  return async (bytes, signal) => {
    socket.setTimeout(0);
    try {
      await turn(bytes, signal);
    } finally {
      socket.setTimeout(idleMs);
    }
  };
}

/** `fn`, called at most once (a resumed run writes its last chunk again). */
function once(fn: (() => void) | undefined): (() => void) | undefined {
  if (fn === undefined) return undefined;
  let called = false;
  return () => {
    if (called) return;
    called = true;
    fn();
  };
}

const toError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));

/**
 * Connect (TCP, TLS), tune the socket for the link, and authenticate for the migration
 * (CHALLENGE, HELLO, AUTH_OK; on revision 1.1 HELLO, AUTH_OK): a link batches of this migration
 * can run on, one at a time.
 */
async function openLink(o: SendBatchOptions, log: Logger): Promise<Link> {
  const socket = await connect(o, log);
  const reader = new SocketFrameReader(socket, new FrameDecoder(CLIENT_PREAUTH), {
    // A (non-Node) destination that refuses our certificate says so with an alert on the first read.
    mapSocketError: (err) =>
      isCertificateRefusal(err)
        ? tlsFailureOf(o.address, err)
        : new DestinationUnreachableError(`data channel to ${o.address}: ${err.message}`, { cause: err }),
  });
  const idleMs = o.idleTimeoutMs ?? 60_000;
  const onIdle = (): void =>
    reader.abort(new DestinationUnreachableError(`no traffic from ${o.address} for ${idleMs} ms`));
  socket.setTimeout(idleMs, onIdle);
  const onAbort = (): void => reader.abort(aborted(o.signal as AbortSignal));
  o.signal?.addEventListener("abort", onAbort, { once: true });
  if (o.signal?.aborted === true) onAbort();
  try {
    const { bytes, rttUs, sealer, nonce } = await handshake(o, socket, reader);
    const tuning = tuneSocket(socket, o.bandwidthLimitBytesPerSec, log, { userTimeoutMs: UNACKED_TIMEOUT_MS });
    log.info({ address: o.address, handshakeRttUs: rttUs, sealed: sealer !== undefined, ...tuning }, "data link open");
    return {
      migrationId: o.migrationId,
      nonce,
      hellos: 0,
      socket,
      reader,
      encrypted: socket instanceof TLSSocket,
      sealer,
      tuning,
      handshakeUs: rttUs,
      batches: 0,
      pendingWireBytes: bytes,
    };
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
    socket.setTimeout(0);
    socket.off("timeout", onIdle);
  }
}

/**
 * CHALLENGE → HELLO → AUTH_OK (on a link that took revision 1.1 by ALPN, HELLO → AUTH_OK: the
 * HELLO answers the nonce the TLS session exports, one round trip less); resolves to the bytes
 * this side wrote, the HELLO's round trip, the challenge (later HELLOs on the link answer nonces
 * derived from it) and, on a TLS link whose
 * destination took our offer, the sealed writer every later write must go through (the
 * destination stopped its TLS reads before its AUTH_OK: see #common/secure-link/sealed.ts).
 */
async function handshake(
  o: SendBatchOptions,
  socket: Socket,
  reader: SocketFrameReader,
): Promise<{ bytes: number; rttUs: number; nonce: Uint8Array; sealer: SealedWriter | undefined }> {
  const nonce = speaks11(socket) ? exportedNonce(socket as TLSSocket) : await challengeOf(o, reader);
  const offer = socket instanceof TLSSocket && sealed.available && (o.zeroCopy ?? true);
  const sent = performance.now();
  const answer = await hello(o, socket, reader, nonce, offer);
  const rttUs = Math.round((performance.now() - sent) * 1000);
  if (!answer.sealed) return { bytes: answer.bytes, rttUs, nonce, sealer: undefined };
  if (!offer) throw new ProtocolError(`${o.address} switched to sealed records, which this side did not offer`);
  const keys = exportSealKeys(socket, SEALED_LABEL_CLIENT_TO_SERVER, nonce);
  const sealer = SealedWriter.of(socket, keys, o.idleTimeoutMs ?? 60_000);
  if (sealer === undefined) throw new DestinationUnreachableError(`data channel to ${o.address} closed`);
  return { bytes: answer.bytes, rttUs, nonce, sealer };
}

async function challengeOf(o: SendBatchOptions, reader: SocketFrameReader): Promise<Uint8Array> {
  const challenge = await reader.next();
  if (challenge.kind === "end" && o.tls !== undefined) throw closedAfterHandshake(o.address);
  if (challenge.kind !== "frame" || challenge.frame.kind !== "CHALLENGE") {
    throw new DestinationUnreachableError(`${o.address} closed the connection before its CHALLENGE`);
  }
  return challenge.frame.nonce;
}

/**
 * A new connection's HELLO → AUTH_OK for `o`'s migration, answering `nonce`, before anything
 * else is sent; `offer`: sealed records. Resolves to the bytes written and whether the
 * destination switched to sealed records. The reader accepts only the answer meanwhile, and a
 * session's frames after it. A kept link's later HELLOs go with its next batch (rehello).
 */
async function hello(
  o: SendBatchOptions,
  socket: Socket,
  reader: SocketFrameReader,
  nonce: Uint8Array,
  offer: boolean,
): Promise<{ bytes: number; sealed: boolean }> {
  const frame = helloFrame(o, nonce, offer);
  reader.decoder.setLimits(CLIENT_PREAUTH);
  await new Promise<void>((resolve, reject) => {
    socket.write(frame, (err) =>
      err
        ? reject(new DestinationUnreachableError(`data channel to ${o.address}: ${err.message}`, { cause: err }))
        : resolve(),
    );
  });
  const sealed = await helloAnswer(o, reader, true);
  return { bytes: frame.length, sealed };
}

function helloFrame(o: SendBatchOptions, nonce: Uint8Array, offer: boolean): Uint8Array {
  const mac = helloMac(migrationToken(o.secret, o.migrationId), nonce, o.migrationId, o.sourceHost);
  return encodeControl({ kind: "HELLO", migrationId: o.migrationId, sourceHost: o.sourceHost, mac, sealed: offer });
}

/** Reads the answer to a HELLO: AUTH_OK (whether it switches to sealed records), or throws. */
async function helloAnswer(o: SendBatchOptions, reader: SocketFrameReader, first: boolean): Promise<boolean> {
  let answer = await reader.next();
  // A kept link may still be sent BASE_SUMS of its last migration: they are dropped.
  while (answer.kind === "frame" && answer.frame.kind === "BASE_SUMS") answer = await reader.next();
  // Revision 1.1 sends no CHALLENGE: a listener that refuses our certificate closes here instead.
  if (answer.kind === "end" && first && o.tls !== undefined) throw closedAfterHandshake(o.address);
  if (answer.kind === "frame" && answer.frame.kind === "AUTH_FAIL") {
    throw new AuthFailedError(`${o.address} refused migration ${o.migrationId}: ${answer.frame.message}`);
  }
  if (answer.kind !== "frame" || answer.frame.kind !== "AUTH_OK") {
    throw new DestinationUnreachableError(`${o.address} closed the connection during authentication`);
  }
  reader.decoder.setLimits(CLIENT_SESSION);
  return answer.frame.sealed === true;
}

/**
 * A kept link moves on to migration `o`: its HELLO (answering the connection's next nonce) is
 * made now and written by the run ahead of its batch, without waiting a round trip for AUTH_OK;
 * the run reads AUTH_OK before its replies. The destination closes the link after an AUTH_FAIL
 * without reading on, so nothing written behind a refused HELLO is taken; any failure destroys
 * the link, so it is taken as authenticated for `o` from here on.
 */
function rehello(o: SendBatchOptions, link: Link): void {
  link.hellos += 1;
  link.hello = helloFrame(o, helloNonce(link.nonce, link.hellos), false);
  link.reader.decoder.setLimits(CLIENT_REHELLO);
  link.migrationId = o.migrationId;
  link.sums = undefined;
}

async function readReplies(session: ClientSession, reader: SocketFrameReader): Promise<void> {
  for (;;) {
    const step = await reader.next();
    if (step.kind === "end") throw new DestinationUnreachableError("destination closed the connection mid-batch");
    if (step.kind !== "frame") throw new ProtocolError("destination sent a CHUNK");
    if (session.onReply(step.frame) === "done") return;
  }
}

/** Chunk buffers a sending batch holds: one on the wire, one being read (see sendChunks). */
export const SEND_BUFFERS = 2;

/**
 * Pipeline: while chunk i is on the wire, chunk i+1 is read and analyzed into the other buffer.
 * Resends (after a CRC mismatch at the destination) reuse whichever buffer just came free. The
 * two buffers come from the process's pre-faulted cache and go back to it.
 */
async function sendChunks(
  o: SendBatchOptions & { from: number; endEarly?: boolean },
  session: ClientSession,
  source: SourceVolume,
): Promise<void> {
  const buffers = Array.from({ length: SEND_BUFFERS }, () => chunkBuffers.take(batchBufferBytes(o)));
  const prepare = (index: number, buffer: Buffer): Promise<PreparedChunk> => {
    const { offset, length } = chunkRange(o.volumeSizeBytes, o.chunkSizeBytes, index);
    const p = source.prepare(offset, length, buffer);
    p.catch(() => undefined); // handled where it is awaited
    return p;
  };
  const end: ControlFrame = { kind: "BATCH_END", chunkCount: o.chunkCount };
  // A resumed run starts at its first chunk the destination has not committed.
  const { from } = o;
  let pending: Promise<PreparedChunk> | undefined =
    o.chunkCount > from ? prepare(o.firstChunk + from, buffers[from % SEND_BUFFERS] as Buffer) : undefined;
  try {
    for (let i = from; i < o.chunkCount; i++) {
      const current = await (pending as Promise<PreparedChunk>);
      const free = buffers[i % SEND_BUFFERS] as Buffer;
      pending =
        i + 1 < o.chunkCount ? prepare(o.firstChunk + i + 1, buffers[(i + 1) % SEND_BUFFERS] as Buffer) : undefined;
      // Ending early, a batch whose answers cannot ask for data ends in its last chunk's write.
      const endsWith = i === o.chunkCount - 1 && o.endEarly === true && o.incremental !== true && session.mayEndEarly;
      if (endsWith) session.batchEndSent = true;
      await session.sendChunk(current, endsWith ? end : undefined);
      if (!endsWith) await sendResends(o, session, source, free);
    }
    o.onWritten?.();
    if (!session.batchEndSent) {
      const done = (): boolean => session.allAcked || (o.endEarly === true && session.mayEndEarly);
      for (;;) {
        await sendResends(o, session, source, buffers[0] as Buffer);
        if (done()) break;
        await session.changed();
      }
      session.batchEndSent = true;
      await session.sendControl(end);
    }
    if (o.endEarly && !session.allAcked)
      o.log.debug({ unacknowledged: o.chunkCount - session.acked.size }, "batch ends ahead of its acknowledgements");
  } finally {
    await pending?.catch(() => undefined);
    // A sendfile() never reads these buffers, and every copy-path write has completed: reuse them.
    for (const b of buffers) chunkBuffers.give(b);
  }
}

async function sendResends(
  o: SendBatchOptions,
  session: ClientSession,
  source: SourceVolume,
  buffer: Buffer,
): Promise<void> {
  for (let offset = session.takeResend(); offset !== undefined; offset = session.takeResend()) {
    const length = chunkRange(o.volumeSizeBytes, o.chunkSizeBytes, offset / o.chunkSizeBytes).length;
    await session.sendChunk(await source.prepare(offset, length, buffer));
  }
}

/**
 * TCP connect (and TLS handshake) with a deadline. A network failure is
 * DestinationUnreachableError (retryable); a TLS failure or a destination presenting another
 * host's certificate stays TlsHandshakeError or PeerIdentityMismatchError (permanent) and is
 * logged with the address.
 */
async function connect(o: SendBatchOptions, log: Logger): Promise<Socket> {
  const target = parseAddress(o.address);
  if (target === undefined)
    throw new DestinationUnreachableError(`data channel address must be HOST:PORT, got ${JSON.stringify(o.address)}`);
  const tls = o.tls && { tls: o.tls.tls, expectIdentity: hostIdentity(o.tls.destHost), alpn: [DATA_ALPN] };
  let socket: Socket;
  try {
    socket = await dial({ ...target, timeoutMs: o.connectTimeoutMs ?? 10_000, signal: o.signal, tls });
  } catch (err) {
    if (err instanceof ConnectAbortedError) throw aborted(o.signal as AbortSignal);
    if (err instanceof TlsHandshakeError || err instanceof PeerIdentityMismatchError) {
      log.warn({ code: err.code, address: o.address, reason: err.message }, "destination refused: TLS");
      throw err;
    }
    // ConnectTimeoutError or ConnectFailedError: their messages name the address and the reason.
    const cause = err instanceof ConnectFailedError ? err.cause : err;
    throw new DestinationUnreachableError((err as Error).message, { cause });
  }
  socket.on("error", () => undefined); // reported through the frame reader
  return socket;
}
