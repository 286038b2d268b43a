import type { Socket } from "node:net";
import { metrics, secondsSince } from "#common/metrics/registry.js";
import type { Logger } from "#common/logger.js";
import { DwcpError } from "#common/errors.js";
import { CompressedChunkCorruptError, crc32c, crc32cCombine, crc32cZeros, decompressChunk } from "#native/index.js";
import { gapsOf, spreadSegments, type Segment } from "../../domain/data-channel/segments.js";
import { batchProblem, batchRange, chunkProblem } from "../../domain/data-channel/batch.js";
import { SERVER_IDLE, serverInBatch } from "../../domain/data-channel/decoder.js";
import { fenceKey, tokenOf, type FenceTable } from "../../domain/data-channel/fence.js";
import { batchKey, ResumeTable, writtenBefore } from "../../domain/data-channel/resume.js";
import {
  encodeControl,
  FENCED,
  MAX_RESUME_CHUNKS,
  segmentBytes,
  type BatchBegin,
  type ChunkHeader,
  type ControlFrame,
  type WireCode,
} from "../../domain/data-channel/frames.js";
import { AuthFailedError, ProtocolError } from "../../errors.js";
import {
  readBackName,
  readBacks,
  keepsRecords,
  recordHashes,
  recordReadBack,
  type HashRecord,
  type ReadBackRecord,
} from "../read-back.js";
import { chunkHash, encodeHashList, zeroChunkHash } from "../volume-hash.js";
import { destinationError } from "./io-errors.js";
import { batchBufferBytes, type BufferPool } from "./buffer-pool.js";
import { DestinationFile } from "./destination-file.js";
import { matchBase } from "./base-chunk.js";
import { FencedError } from "./fenced.js";
import type { FrameReader } from "./frame-reader.js";

export interface BatchReceiver {
  socket: Socket;
  reader: FrameReader;
  roots: readonly string[];
  pool: BufferPool;
  /** The migration the HELLO authenticated; a batch for any other is refused. */
  migrationId: string;
  /** Shared by every connection of this data server: who holds which batch (see fence.ts). */
  fences: FenceTable<BatchHolder>;
  log: Logger;
}

/** One session's hold on one batch; `fence` stops it and resolves once its writes have settled. */
export interface BatchHolder {
  fence(err: FencedError): Promise<void>;
}

export function send(socket: Socket, frame: ControlFrame): void {
  if (!socket.destroyed && socket.writable) socket.write(encodeControl(frame));
}

export function wireCode(err: unknown): WireCode {
  if (err instanceof DwcpError) {
    switch (err.code) {
      case FENCED:
      case "NO_SPACE":
      case "DESTINATION_WRITE_FAILED":
      case "PATH_OUTSIDE_ROOT":
      case "PROTOCOL_ERROR":
      case "AUTH_FAILED":
      case "CHECKSUM_MISMATCH":
        return err.code;
    }
  }
  return "INTERNAL";
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** What every receiving session of this process wrote per batch, for senders that resume (resume.ts). */
const resumable = new ResumeTable<WrittenChunk>();

/** The records of the run's committed prefix, from the sessions of this attempt that wrote them. */
function committedPrefix(begin: BatchBegin): Map<number, WrittenChunk> {
  if (begin.resume !== true) return new Map();
  const offsets = Array.from({ length: begin.chunkCount }, (_, i) => (begin.firstChunk + i) * begin.chunkSizeBytes);
  return resumable.committedPrefix(batchKey(begin), tokenOf(begin), offsets, MAX_RESUME_CHUNKS);
}

/**
 * Receive one batch after its BATCH_BEGIN: verify and write each chunk as it arrives (replies are
 * sent per chunk, in completion order, so the sender can pipeline), then fsync on BATCH_END and
 * answer BATCH_OK. Throws a typed error if the batch fails; the caller answers BATCH_ERR.
 *
 * Fencing: the batch is claimed before the file is opened. An older sender is refused; a live
 * older session (or this stripe's session on an abandoned connection) is told to stop and its
 * writes in flight settle before this one writes or answers RESUME_AT; every chunk checks the
 * claim as it is admitted, so a superseded sender writes nothing it receives after the fence.
 */
export async function receiveBatch(ctx: BatchReceiver, begin: BatchBegin): Promise<void> {
  if (begin.migrationId !== ctx.migrationId) {
    throw new AuthFailedError(
      `this connection is authenticated for migration ${ctx.migrationId}, not ${begin.migrationId}`,
    );
  }
  const problem = batchProblem(begin);
  if (problem !== undefined) throw new ProtocolError(`BATCH_BEGIN: ${problem}`);
  const state: BatchState = { written: new Map(), inflight: new Set(), failure: undefined, fenced: false };
  const holder: BatchHolder = {
    fence: async (err) => {
      state.fenced = true;
      state.failure ??= err;
      ctx.reader.abort(err);
      await Promise.allSettled(state.inflight);
    },
  };
  await withBatchClaim(ctx.fences, begin, holder, ctx.log, (holds) => receiveClaimed(ctx, begin, state, holds));
}

/**
 * Claims `begin`'s batch for `holder` in the fence table, runs `work` while it holds it, and
 * releases it. An older token is refused (FencedError); a live older holder is fenced first and
 * its writes in flight settle before `work` starts. `holds()` says whether nobody newer has
 * claimed the batch since: check it before every write. Data channel sessions and local copies
 * (local-copy.ts) of one batch claim through here, so they fence each other.
 */
export async function withBatchClaim<T>(
  fences: FenceTable<BatchHolder>,
  begin: BatchBegin,
  holder: BatchHolder,
  log: Logger,
  work: (holds: () => boolean) => Promise<T>,
): Promise<T> {
  const key = fenceKey(begin);
  const run = { firstChunk: begin.firstChunk, chunkCount: begin.chunkCount, resume: begin.resume === true };
  const claim = fences.claim(key, tokenOf(begin), holder, begin.stripe, run);
  if (!claim.granted && claim.resumed === true) {
    throw new FencedError(
      `stripe at chunk ${begin.firstChunk} of batch ${begin.batch} was resumed on another connection; ` +
        "this one's BATCH_BEGIN came late",
    );
  }
  if (!claim.granted) {
    throw new FencedError(
      `batch ${begin.batch} attempt ${begin.attempt} delivery ${begin.delivery ?? "?"} is stale: ` +
        `attempt ${claim.newer.attempt} delivery ${claim.newer.delivery} holds it`,
    );
  }
  try {
    if (claim.superseded !== undefined) await fenceSuperseded(claim.superseded, claim.resumed === true, begin, log);
    return await work(() => fences.holds(key, holder));
  } finally {
    fences.release(key, holder);
  }
}

/**
 * Stops the sessions a claim took over from and waits until their writes settled. The sender's
 * own stripe resumed on a new connection (same group and token) supersedes the session on its
 * abandoned connection, which TCP may still feed: nothing it receives from now on is written, so
 * the RESUME_AT that follows names every chunk it ever will have committed.
 */
async function fenceSuperseded(
  superseded: BatchHolder[],
  resumed: boolean,
  begin: BatchBegin,
  log: Logger,
): Promise<void> {
  const { attempt, delivery, stripe, firstChunk } = begin;
  let err: FencedError;
  if (resumed) {
    log.info({ attempt, delivery, stripe, firstChunk }, "stripe resumed on a new connection; fencing its old session");
    err = new FencedError(`stripe at chunk ${firstChunk} of batch ${begin.batch} resumed on a new connection`);
  } else {
    log.warn({ attempt, delivery }, "batch taken over from an older sender; fencing it");
    err = new FencedError(
      `batch ${begin.batch} was handed to a newer sender (attempt ${attempt}, delivery ${delivery ?? "?"})`,
    );
  }
  await Promise.all(superseded.map((h) => h.fence(err)));
}

/** With `verify`, the batch's range is unproven from now until its read-back matches (read-back.ts). */
export async function markUnproven(part: string, begin: BatchBegin): Promise<void> {
  if (begin.verify === false || !keepsRecords(begin.volumeSizeBytes)) return;
  try {
    await recordReadBack(part, { migrationId: begin.migrationId, ...batchRange(begin) });
  } catch (err) {
    throw destinationError(err, readBackName(part));
  }
}

async function receiveClaimed(
  ctx: BatchReceiver,
  begin: BatchBegin,
  state: BatchState,
  holds: () => boolean,
): Promise<void> {
  const started = performance.now();
  const file = await DestinationFile.open(ctx.roots, begin);
  try {
    await markUnproven(file.path, begin);
  } catch (err) {
    await file.close();
    throw err;
  }
  ctx.pool.ensure(batchBufferBytes(begin));
  ctx.reader.decoder.setLimits(serverInBatch(begin.chunkSizeBytes));
  state.holds = holds;
  try {
    // After the claim: an earlier session of the run was fenced (its writes settled) or, for a
    // stripe, still holds with the same token; either way its records are final for these chunks.
    const committed = committedPrefix(begin);
    for (const [offset, c] of committed) state.written.set(offset, c);
    resumable.track(batchKey(begin), tokenOf(begin), state.written);
    if (begin.resume === true) {
      // What RESUME_AT calls committed is on the disk, whoever's descriptor wrote it.
      if (committed.size > 0) await file.sync();
      send(ctx.socket, { kind: "RESUME_AT", crc32c: [...committed.values()].map((c) => c.crc32c) });
    }
    const written = await receiveChunks(ctx, begin, file, state);
    await Promise.all(state.inflight);
    if (state.failure !== undefined) throw state.failure;
    if (written.size !== begin.chunkCount) {
      throw new ProtocolError(`BATCH_END after ${written.size} of ${begin.chunkCount} chunks were written`);
    }
    await file.sync();
    const expected = expectedRange(begin, written);
    if (!holds()) throw state.failure ?? new FencedError(`batch ${begin.batch} was handed to a newer sender`);
    const records = keepsRecords(begin.volumeSizeBytes);
    if (records) await recordHashes(file.path, hashRecord(begin, written), ctx.log);
    send(ctx.socket, { kind: "BATCH_OK" });
    metrics.batchReceive.observe(secondsSince(started));
    if (records && expected !== undefined) readBacks.schedule(file.path, expected, ctx.log);
  } finally {
    await Promise.allSettled(state.inflight);
    await file.close();
    ctx.reader.decoder.setLimits(SERVER_IDLE);
  }
}

/** What this side computed of one chunk it wrote: its length, CRC32C and BLAKE3 (base64url). */
export interface WrittenChunk {
  length: number;
  crc32c: number;
  blake3: string;
}

/**
 * The batch's byte range and the CRC32C its chunks combine to, in order: what the background
 * read-back (read-back.ts) must find on the disk for finalize to skip reading the range again.
 * Undefined for a batch sent with `verify: false` (nothing is read back).
 */
export function expectedRange(
  begin: BatchBegin,
  written: ReadonlyMap<number, WrittenChunk>,
): ReadBackRecord | undefined {
  if (begin.verify === false) return undefined;
  const { start, end, chunks } = inOrder(begin, written);
  let crc = 0;
  for (const c of chunks) crc = crc32cCombine(crc, c.crc32c, c.length);
  return { migrationId: begin.migrationId, start, end, crc32c: crc >>> 0 };
}

/** The batch's range and the BLAKE3 of its chunks as this side computed them, for finalize (volume-hash.ts). */
export function hashRecord(begin: BatchBegin, written: ReadonlyMap<number, WrittenChunk>): HashRecord {
  const { start, end, chunks } = inOrder(begin, written);
  return { migrationId: begin.migrationId, start, end, blake3: encodeHashList(chunks.map((c) => c.blake3)) };
}

/** The written chunks in offset order and the range they cover; throws if they leave a gap. */
function inOrder(
  begin: BatchBegin,
  written: ReadonlyMap<number, WrittenChunk>,
): { start: number; end: number; chunks: WrittenChunk[] } {
  const { start } = batchRange(begin);
  let end = start;
  const chunks: WrittenChunk[] = [];
  for (const [offset, c] of [...written].sort((a, b) => a[0] - b[0])) {
    if (offset !== end)
      throw new ProtocolError(`the chunks of batch ${begin.batch} leave [${end}, ${offset}) unwritten`);
    chunks.push(c);
    end = offset + c.length;
  }
  return { start, end, chunks };
}

interface BatchState {
  /** Offset -> length, CRC32C and BLAKE3 of every chunk written and acknowledged. */
  written: Map<number, WrittenChunk>;
  inflight: Set<Promise<void>>;
  /** First chunk that could not be written (or the fence); fails the batch. */
  failure: Error | undefined;
  /** A newer sender took the batch over. */
  fenced: boolean;
  /** Whether this session still holds the batch; checked before every write. */
  holds?: () => boolean;
}

async function receiveChunks(
  ctx: BatchReceiver,
  begin: BatchBegin,
  file: DestinationFile,
  state: BatchState,
): Promise<BatchState["written"]> {
  const { written, inflight } = state;
  let buffer: Buffer | undefined;
  for (;;) {
    const step = await ctx.reader.next();
    if (step.kind === "chunk-begin") {
      checkChunk(begin, step.header);
      buffer = await ctx.pool.acquire();
      ctx.reader.provideChunkBuffer(buffer);
    } else if (step.kind === "chunk") {
      if (step.data === undefined) checkChunk(begin, step.header);
      if (writtenBefore(resumable, batchKey(begin), tokenOf(begin), step.header.offset, written)) {
        // Correct (the bytes are verified and written again) but wasted: resume should have skipped it.
        ctx.log.warn(
          { offset: step.header.offset, length: step.header.length, batch: begin.batch },
          "committed chunk received again",
        );
      }
      // A compressed chunk skipped chunk-begin: it is unpacked into a pool buffer here. A BASE
      // chunk's bytes are read from the base into one.
      const base = step.header.base !== undefined;
      if (step.packed !== undefined || base) buffer = await ctx.pool.acquire();
      const held = step.data === undefined && step.packed === undefined && !base ? undefined : buffer;
      buffer = undefined;
      // Admitted only while this session holds the batch; a fence from here on waits for the
      // write (it is in `inflight` in this same turn). Chunks admitted before a fence are written
      // even so: the reader delivers in order, so a fenced session's chunks stay a prefix.
      const admitted = !state.fenced && state.holds?.() !== false;
      const stored = !admitted
        ? Promise.reject(state.failure ?? fencedChunk(step.header))
        : base
          ? storeBase(ctx, file, step.header, held as Buffer)
          : step.packed === undefined
            ? storeChunk(ctx, file, step.header, step.data)
            : storePacked(ctx, file, step.header, step.packed, held as Buffer);
      const work = stored
        .then((blake3) => {
          if (blake3 !== undefined)
            written.set(step.header.offset, { length: step.header.length, crc32c: step.header.crc32c, blake3 });
        })
        .catch((err: unknown) => {
          state.failure ??= err instanceof Error ? err : new Error(String(err));
          ctx.reader.abort(state.failure);
        })
        .finally(() => {
          if (held !== undefined) ctx.pool.release(held);
          inflight.delete(work);
        });
      inflight.add(work);
    } else if (step.kind === "frame" && step.frame.kind === "BATCH_END") {
      if (step.frame.chunkCount !== begin.chunkCount) {
        throw new ProtocolError(`BATCH_END says ${step.frame.chunkCount} chunks, BATCH_BEGIN said ${begin.chunkCount}`);
      }
      return written;
    } else {
      throw new ProtocolError(
        step.kind === "end" ? "connection closed inside a batch" : "unexpected frame inside a batch",
      );
    }
  }
}

const fencedChunk = (h: ChunkHeader): FencedError =>
  new FencedError(`chunk at offset ${h.offset}: the batch was handed to a newer sender`);

function checkChunk(begin: BatchBegin, header: ChunkHeader): void {
  const problem = chunkProblem(begin, header);
  if (problem !== undefined) throw new ProtocolError(`CHUNK: ${problem}`);
}

/**
 * A compressed chunk: unpacked into `into` (a pool buffer), then stored like any other. One that
 * does not unpack was corrupted in transit and is asked for again.
 */
async function storePacked(
  ctx: BatchReceiver,
  file: DestinationFile,
  h: ChunkHeader,
  packed: Uint8Array,
  into: Buffer,
): Promise<string | undefined> {
  let raw: Uint8Array;
  const rawLength = segmentBytes(h.segments);
  const codec = h.codec ?? "lz4";
  // One segment (a chunk without zero pages, the common case) unpacks in place: no 4 MiB buffer
  // per chunk for the GC to collect, which is what let a receiver's RSS run ahead of its pool.
  const only = h.segments.length === 1 ? h.segments[0] : undefined;
  const inPlace =
    codec === "zstd" && only !== undefined && only.relOffset + rawLength <= into.length
      ? into.subarray(only.relOffset, only.relOffset + rawLength)
      : undefined;
  try {
    raw = await decompressChunk({ codec, data: packed, rawLength }, inPlace);
  } catch (err) {
    if (err instanceof CompressedChunkCorruptError) return askAgain(ctx, h, "compressed chunk does not unpack");
    throw err;
  }
  if (raw === inPlace) {
    for (const g of gapsOf(h.segments, h.length)) into.fill(0, g.relOffset, g.relOffset + g.length);
  } else if (!spreadSegments(h.segments, raw, into, h.length)) {
    return askAgain(ctx, h, "compressed chunk unpacks to the wrong size");
  }
  return storeChunk(ctx, file, h, into.subarray(0, h.length));
}

/** Answer CHECKSUM_MISMATCH for a chunk that failed verification: the sender resends it. */
function askAgain(ctx: BatchReceiver, h: ChunkHeader, reason: string): undefined {
  metrics.checksumMismatches.inc({ stage: "chunk" });
  ctx.log.warn({ offset: h.offset, reason }, "chunk failed its CRC32C check; asking for it again");
  send(ctx.socket, { kind: "CHUNK_ERR", offset: h.offset, failure: { code: "CHECKSUM_MISMATCH", message: reason } });
  return undefined;
}

/**
 * CRC32C and BLAKE3 of an assembled chunk (the hash on the pool while this thread checksums the
 * same pooled buffer); a zero chunk, which crossed the wire as a header only, hashes as its zeros.
 */
async function digestsOf(h: ChunkHeader, data: Uint8Array | undefined): Promise<{ crc32c: number; blake3: string }> {
  if (data === undefined) return { crc32c: crc32cZeros(h.length), blake3: await zeroChunkHash(h.length) };
  const hashing = chunkHash(data);
  let crc: number;
  try {
    crc = segmentsCrc32c(data, h.segments, h.length);
  } catch (err) {
    await hashing.catch(() => undefined); // the pool may still read the buffer
    throw err;
  }
  return { crc32c: crc, blake3: await hashing };
}

/**
 * CRC32C of a chunk of `length` bytes that is zeros outside `segments` (in order, within it):
 * the segments' bytes in `data` checksummed, the gaps between them counted as zeros in
 * O(log n) each. The gaps of a sparse chunk, most of its bytes, are never read.
 */
export function segmentsCrc32c(data: Uint8Array, segments: readonly Segment[], length: number): number {
  let crc = 0;
  let at = 0;
  for (const s of segments) {
    crc = crc32c(data.subarray(s.relOffset, s.relOffset + s.length), crc32cZeros(s.relOffset - at, crc));
    at = s.relOffset + s.length;
  }
  return crc32cZeros(length - at, crc);
}

/**
 * Verify the assembled chunk's CRC32C; on a match write it and answer CHUNK_OK. Resolves to the
 * chunk's BLAKE3 (kept for finalize, see volume-hash.ts) if it was written.
 */
async function storeChunk(
  ctx: BatchReceiver,
  file: DestinationFile,
  h: ChunkHeader,
  data: Uint8Array | undefined,
): Promise<string | undefined> {
  const started = performance.now();
  const { crc32c: actual, blake3 } = await digestsOf(h, data);
  if (actual !== h.crc32c) return askAgain(ctx, h, `CRC32C ${actual} != ${h.crc32c}`);
  return commitChunk(ctx, file, h, data, blake3, started);
}

/**
 * A BASE chunk: the base's bytes at its place, if their BLAKE3 and CRC32C are the source's, are
 * written as a received chunk is (base-chunk.ts); otherwise CHUNK_ERR asks for the data.
 */
async function storeBase(
  ctx: BatchReceiver,
  file: DestinationFile,
  h: ChunkHeader,
  into: Buffer,
): Promise<string | undefined> {
  const started = performance.now();
  const match = await matchBase(file.base, h, into);
  if (!match.ok) {
    ctx.log.debug(
      { offset: h.offset, code: match.code, reason: match.reason },
      "base chunk missed; asking for its data",
    );
    send(ctx.socket, { kind: "CHUNK_ERR", offset: h.offset, failure: { code: match.code, message: match.reason } });
    return undefined;
  }
  const zero = match.segments.length === 0;
  const found: ChunkHeader = { offset: h.offset, length: h.length, crc32c: h.crc32c, zero, segments: match.segments };
  return commitChunk(ctx, file, found, zero ? undefined : match.data, match.blake3, started);
}

/** Write a verified chunk and answer CHUNK_OK; resolves to its BLAKE3. */
async function commitChunk(
  ctx: BatchReceiver,
  file: DestinationFile,
  h: ChunkHeader,
  data: Uint8Array | undefined,
  blake3: string,
  started: number,
): Promise<string> {
  try {
    await file.writeChunk(h.offset, h.length, h.segments, data);
  } catch (err) {
    send(ctx.socket, {
      kind: "CHUNK_ERR",
      offset: h.offset,
      failure: { code: wireCode(err), message: messageOf(err) },
    });
    throw err;
  }
  metrics.chunkStore.observe(secondsSince(started));
  if (data !== undefined) metrics.bytesWritten.inc(h.length);
  ctx.log.debug({ offset: h.offset, length: h.length, zero: h.zero }, "chunk written");
  send(ctx.socket, { kind: "CHUNK_OK", offset: h.offset });
  return blake3;
}

export { messageOf };
