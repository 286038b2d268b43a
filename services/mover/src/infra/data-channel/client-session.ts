import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type { TransferredChunk } from "#schemas/index.js";
import type { CompressionChoice } from "../../domain/data-channel/compression.js";
import { compressChunk, socketFd, SyscallError, zeroCopy } from "#native/index.js";
import { gatherSegments } from "../../domain/data-channel/segments.js";
import { DwcpError } from "#common/errors.js";
import type { Logger } from "#common/logger.js";
import {
  BASE_MISMATCH,
  encodeBaseChunk,
  encodeChunkHead,
  encodeControl,
  FENCED,
  NO_BASE,
  segmentBytes,
  type ControlFrame,
  type WireFailure,
} from "../../domain/data-channel/frames.js";
import { reserve, type TokenBucket } from "../../domain/data-channel/token-bucket.js";
import { afterBaseAnswer, baseRefs, sendKnowing, type BaseRefs } from "../../domain/data-channel/base-refs.js";
import type { BaseSums } from "../../domain/data-channel/base-sums.js";
import { decodeHashes } from "../volume-hash.js";
import {
  ChecksumMismatchError,
  DestinationUnreachableError,
  errorFromWire,
  ProtocolError,
  SourceChangedError,
} from "../../errors.js";
import { FencedError } from "./fenced.js";
import type { SocketFrameReader } from "./frame-reader.js";
import type { PreparedChunk } from "./source-volume.js";
import type { SealedWriter } from "./sealed-link.js";
import type { LinkTurn } from "./link-scheduler.js";

export interface SessionOptions {
  socket: Socket;
  reader: SocketFrameReader;
  /**
   * The socket is TLS: every write is encrypted into TLS records in user space, and a writev of
   * several parts would first be gathered into one more copy, so parts are written one by one.
   */
  encrypted?: boolean;
  /** The link's sender direction is sealed records: every write goes through this. */
  sealer?: SealedWriter | undefined;
  chunkCount: number;
  maxResends: number;
  /** sendfile() segment bytes from this fd instead of copying them through JS; undefined = copy. */
  sendfileFrom: number | undefined;
  /**
   * The wire-byte budget as of now (none: unpaced), shared by every batch of the same migration
   * this mover sends at once; asked per chunk, so a limit changed mid-batch applies at once.
   */
  bucket: () => TokenBucket | undefined;
  /**
   * The link's turn (link-scheduler.ts), after the migration's own budget: chunks of migrations
   * sharing the link go by priority and weight at the link's rate. Undefined: no turns.
   */
  linkTurn?: LinkTurn | undefined;
  /** The codec tried on each chunk's segments (kept only where a sample and the chunk shrink >= 10%). */
  compression: CompressionChoice;
  onChunk: ((c: TransferredChunk) => void) | undefined;
  /** Chunks acknowledged on an earlier connection of this run (a resumed run does not send them). */
  carried?: Carried;
  /**
   * An incremental batch: non-zero chunks go first as BASE references (their BLAKE3), and with
   * their data only where the destination's base does not have them (see base-refs.ts).
   */
  incremental?: boolean;
  /**
   * Of an incremental batch on a revision 1.1 link: the destination's base digests sent ahead. A
   * chunk they cover goes as a reference expected to hit or with its data at once (base-refs.ts).
   */
  baseSums?: BaseSums;
  /** A BASE_SUMS frame read on the link (any batch's on it may come between this one's replies). */
  onBaseSums?: (f: Extract<ControlFrame, { kind: "BASE_SUMS" }>) => void;
  log: Logger;
}

/**
 * What a run's dropped connections achieved: the chunks acknowledged and those sent without an
 * answer (the destination may have committed them: its RESUME_AT says), their bytes, wire bytes.
 */
export interface Carried {
  acked: Map<number, TransferredChunk>;
  sent: Map<number, TransferredChunk>;
  counts: Map<number, ByteBreakdown>;
  wireBytes: number;
}

/** Chunks in a row that do not compress before the session stops trying every chunk. */
export const INCOMPRESSIBLE_STREAK = 4;
/** Most chunks sent untried between two tries on incompressible data. */
export const MAX_UNTRIED = 32;

/** Logical bytes of a batch by what became of them on the way to the wire. */
export interface ByteBreakdown {
  /** Zero pages and holes: announced in a chunk header, not sent. */
  zeroSkipped: number;
  /** Bytes of the chunks' non-zero segments, before compression. */
  data: number;
  /** Of `data`, the bytes of chunks sent compressed, and what they compressed to. */
  packedIn: number;
  packedOut: number;
  /** Of `data`, the bytes of chunks the destination took from its base: not sent. */
  baseReused: number;
}

export const emptyBreakdown = (): ByteBreakdown => ({
  zeroSkipped: 0,
  data: 0,
  packedIn: 0,
  packedOut: 0,
  baseReused: 0,
});

interface SentChunk {
  chunk: TransferredChunk;
  resends: number;
  /** Sent last as a BASE reference (its answer decides whether the data follows). */
  viaBase?: boolean;
  /** That reference was expected to hit (the destination's BASE_SUMS had the chunk). */
  expected?: boolean;
}

/**
 * Sender-side state of one batch on one connection: which chunks are out, acknowledged or due
 * for a resend, and the first failure (which ends everything). The replies are read by
 * readReplies() while the sender pipelines chunks; they meet here.
 */
export class ClientSession {
  error: Error | undefined;
  wireBytes: number;
  /** Where each chunk's logical bytes went, counted once per chunk (resends are in wireBytes only). */
  readonly counts: Map<number, ByteBreakdown>;
  /** Frames the destination answered with in this batch. */
  replies = 0;
  batchEndSent = false;
  readonly acked: Map<number, TransferredChunk>;
  private readonly sent = new Map<number, SentChunk>();
  private readonly resendQueue: number[] = [];
  private wake: (() => void) | undefined;
  /** Something changed while nobody waited: the next changed() returns at once. */
  private signalled = false;
  private readonly stop = new AbortController();
  private sendfileBusy = false;
  /** Chunks in a row whose compression did not pay, and chunks still to send without a try. */
  private misses = 0;
  private untried = 0;
  private destroyWhenIdle = false;
  /** The destination's RESUME_AT: the CRC32Cs of the run's committed prefix. */
  private committed: number[] | undefined;
  /** Whether chunks still go as BASE references first. */
  private refs: BaseRefs;
  /** BASE references out whose answer decides whether data must follow (not expected to hit). */
  private unsureRefs = 0;
  /** Control frames for the next sealed write (holdControl). */
  private readonly held: Uint8Array[] = [];

  constructor(private readonly o: SessionOptions) {
    this.refs = baseRefs(o.incremental === true);
    this.acked = new Map();
    this.counts = new Map();
    this.wireBytes = o.carried?.wireBytes ?? 0;
  }

  /** Resolves to the CRC32Cs of RESUME_AT, the answer to a BATCH_BEGIN with `resume`. */
  async resumePoint(): Promise<readonly number[]> {
    while (this.committed === undefined) await this.changed();
    return this.committed;
  }

  /**
   * A chunk the destination committed before this session (RESUME_AT) and the sender checked:
   * acknowledged without crossing again. Reported through onChunk unless an earlier connection
   * of the run already had its acknowledgement.
   */
  adopt(chunk: TransferredChunk, counts: ByteBreakdown): void {
    this.acked.set(chunk.offset, chunk);
    this.counts.set(chunk.offset, counts);
    if (this.o.carried?.acked.has(chunk.offset) !== true) this.o.onChunk?.(chunk);
  }

  /** The batch's logical bytes by what became of them. */
  get bytes(): ByteBreakdown {
    const sum = emptyBreakdown();
    for (const c of this.counts.values()) {
      sum.zeroSkipped += c.zeroSkipped;
      sum.data += c.data;
      sum.packedIn += c.packedIn;
      sum.packedOut += c.packedOut;
      sum.baseReused += c.baseReused;
    }
    return sum;
  }

  /** What to carry into a new connection of this run (see Carried). */
  carry(): Carried {
    const sent = new Map<number, TransferredChunk>(this.o.carried?.sent);
    for (const [offset, entry] of this.sent) sent.set(offset, entry.chunk);
    const counts = new Map([...(this.o.carried?.counts ?? []), ...this.counts]);
    return {
      acked: new Map([...(this.o.carried?.acked ?? []), ...this.acked]),
      sent,
      counts,
      wireBytes: this.wireBytes,
    };
  }

  get allAcked(): boolean {
    return this.acked.size === this.o.chunkCount;
  }

  /**
   * Every chunk is out and no answer can still ask for data this run must send: BATCH_END may go
   * ahead of the acknowledgements (a lent link, see client.ts). References the base's sums said
   * will hit may still be out; one that misses after BATCH_END fails the batch for a retry.
   */
  get mayEndEarly(): boolean {
    return this.unsureRefs === 0 && this.resendQueue.length === 0;
  }

  /** Record the first failure, wake every waiter and cut the connection. */
  fail(err: Error): void {
    if (this.error !== undefined) return;
    this.error = err;
    this.stop.abort(err);
    this.o.reader.abort(err);
    // A sendfile() or sealed write in flight writes to the socket's raw fd: closing it now could
    // hand the fd number to an unrelated file before the kernel call returns.
    this.o.sealer?.stop();
    if (this.sendfileBusy || this.o.sealer?.busy === true) this.destroyWhenIdle = true;
    else this.o.socket.destroy();
    this.notify();
  }

  check(): void {
    if (this.error !== undefined) throw this.error;
  }

  /**
   * Resolves on the next ack, resend request or failure, or at once if one came since the last
   * call. The memory matters: a CHUNK_ERR read between the sender's last look at the resend
   * queue and this call would otherwise wake nobody, and the batch would sit until the idle
   * timeout (60 s) with its resend queued. Callers re-check their condition in a loop.
   */
  async changed(): Promise<void> {
    this.check();
    if (!this.signalled) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    this.signalled = false;
    this.check();
  }

  takeResend(): number | undefined {
    return this.resendQueue.shift();
  }

  async sendControl(frame: ControlFrame): Promise<void> {
    const bytes = encodeControl(frame);
    await this.throttle(bytes.length);
    await this.write(bytes);
    this.wireBytes += bytes.length;
  }

  /**
   * A control frame that goes out with the next write (on a sealed link: its records in the same
   * writev), e.g. BATCH_BEGIN with the first chunk; without a sealer it is sent at once.
   */
  async holdControl(frame: ControlFrame): Promise<void> {
    await this.hold(encodeControl(frame));
  }

  /** An encoded frame (a kept link's HELLO) for the next sealed write; without a sealer sent at once. */
  async hold(bytes: Uint8Array): Promise<void> {
    await this.throttle(bytes.length);
    this.wireBytes += bytes.length;
    if (this.o.sealer === undefined) await this.write(bytes);
    else this.held.push(bytes);
  }

  /**
   * Frame and send one chunk (in an incremental batch first as a BASE reference); resolves once
   * its buffer may be reused. `then`, a control frame (the batch's BATCH_END after its last
   * chunk), follows the chunk in the same write where the link allows.
   */
  async sendChunk(c: PreparedChunk, then?: ControlFrame): Promise<void> {
    const previous = this.sent.get(c.offset);
    const known = this.o.baseSums?.known(c.offset, { crc32c: c.crc32c, blake3: decodeHashes(c.blake3) }) ?? "unknown";
    const refer = sendKnowing(this.refs, { zero: c.zero, firstSend: previous === undefined }, known);
    this.refs = refer.next;
    if (refer.base) {
      await this.sendBase(c, refer.expected);
      if (then !== undefined) await this.sendControl(then);
      return;
    }
    const tail = then === undefined ? [] : [encodeControl(then)];
    const tailBytes = tail[0]?.length ?? 0;
    const packed = await this.pack(c);
    const codec = this.o.compression.codec;
    const head = encodeChunkHead(
      packed === undefined || codec === "none" ? c : { ...c, packedLength: packed.length, codec },
    );
    const wire = head.length + (packed?.length ?? segmentBytes(c.segments));
    await this.throttle(wire + tailBytes);
    // Registered before the first byte leaves: the answer can arrive before our write completes.
    // A chunk the base did not have is counted again, now as sent.
    if (previous === undefined || previous.viaBase === true) this.count(c, packed);
    const chunk: TransferredChunk = {
      offset: c.offset,
      length: c.length,
      crc32c: c.crc32c,
      zero: c.zero,
      wireBytes: (previous?.chunk.wireBytes ?? 0) + wire,
      blake3: c.blake3,
    };
    this.sent.set(c.offset, { chunk, resends: previous?.resends ?? 0 });
    this.wireBytes += wire + tailBytes;
    if (packed !== undefined) await this.writeCorked([head, packed, ...tail]);
    else if (this.o.sendfileFrom !== undefined && c.segments.length > 0) {
      await this.sendViaSendfile(c, head);
      for (const t of tail) await this.write(t);
    } else await this.sendViaCopy(c, head, tail);
  }

  /** The chunk as a BASE reference: header and BLAKE3 only; its bytes stay at the source. */
  private async sendBase(c: PreparedChunk, expected: boolean): Promise<void> {
    const frame = encodeBaseChunk(c, decodeHashes(c.blake3));
    await this.throttle(frame.length);
    const data = segmentBytes(c.segments);
    this.counts.set(c.offset, { zeroSkipped: c.length - data, data, packedIn: 0, packedOut: 0, baseReused: data });
    const chunk: TransferredChunk = {
      offset: c.offset,
      length: c.length,
      crc32c: c.crc32c,
      zero: c.zero,
      wireBytes: frame.length,
      blake3: c.blake3,
    };
    this.sent.set(c.offset, { chunk, resends: 0, viaBase: true, expected });
    if (!expected) this.unsureRefs += 1;
    this.wireBytes += frame.length;
    await this.write(frame);
  }

  /**
   * The chunk's segment bytes packed by the session's codec, when that pays for this chunk. After
   * INCOMPRESSIBLE_STREAK chunks in a row that did not pay, chunks are sent without a try, then
   * one is tried again: 1, 2, 4 ... up to MAX_UNTRIED chunks apart while they keep not paying.
   */
  private async pack(c: PreparedChunk): Promise<Uint8Array | undefined> {
    const { codec, level } = this.o.compression;
    if (codec === "none" || c.data === undefined || c.segments.length === 0) return undefined;
    if (this.untried > 0) {
      this.untried -= 1;
      return undefined;
    }
    // One segment is compressed where it lies (compression only reads it): no copy per chunk.
    const only = c.segments.length === 1 ? c.segments[0] : undefined;
    const raw =
      only === undefined
        ? gatherSegments(c.segments, c.data)
        : c.data.subarray(only.relOffset, only.relOffset + only.length);
    const packed = await compressChunk(raw, { codec, level });
    if (packed.codec === codec) {
      this.misses = 0;
      return packed.data;
    }
    this.misses += 1;
    if (this.misses >= INCOMPRESSIBLE_STREAK) {
      this.untried = Math.min(MAX_UNTRIED, 2 ** (this.misses - INCOMPRESSIBLE_STREAK));
    }
    return undefined;
  }

  private count(c: PreparedChunk, packed: Uint8Array | undefined): void {
    const data = segmentBytes(c.segments);
    this.counts.set(c.offset, {
      zeroSkipped: c.length - data,
      data,
      packedIn: packed === undefined ? 0 : data,
      packedOut: packed?.length ?? 0,
      baseReused: 0,
    });
  }

  onReply(frame: ControlFrame): "continue" | "done" {
    this.replies += 1;
    switch (frame.kind) {
      case "CHUNK_OK":
        this.onAck(frame.offset);
        return "continue";
      case "CHUNK_ERR":
        this.onChunkError(frame.offset, frame.failure);
        return "continue";
      case "BATCH_OK":
        if (!this.batchEndSent || !this.allAcked)
          throw new ProtocolError("BATCH_OK before every chunk was acknowledged");
        return "done";
      case "BATCH_ERR":
        if (frame.failure.code === FENCED) throw new FencedError(`destination: ${frame.failure.message}`);
        if (frame.failure.code === BASE_MISMATCH || frame.failure.code === NO_BASE)
          throw new ProtocolError(`BATCH_ERR ${frame.failure.code}: ${frame.failure.message}`);
        throw errorFromWire(frame.failure.code, frame.failure.message);
      case "BASE_SUMS":
        if (this.o.onBaseSums === undefined) throw new ProtocolError("unexpected BASE_SUMS from the destination");
        this.o.onBaseSums(frame);
        return "continue";
      case "RESUME_AT":
        if (this.committed !== undefined || frame.crc32c.length > this.o.chunkCount)
          throw new ProtocolError("unexpected RESUME_AT from the destination");
        this.committed = frame.crc32c;
        this.notify();
        return "continue";
      case "CHALLENGE":
      case "HELLO":
      case "AUTH_OK":
      case "AUTH_FAIL":
      case "BATCH_BEGIN":
      case "BATCH_END":
      case "TUNNEL_OPEN":
      case "TUNNEL_OK":
      case "TUNNEL_ERR":
        throw new ProtocolError(`unexpected ${frame.kind} from the destination`);
    }
  }

  private onAck(offset: number): void {
    const entry = this.sent.get(offset);
    if (entry === undefined) throw new ProtocolError(`CHUNK_OK for offset ${offset}, which was not sent`);
    if (entry.viaBase === true) this.refs = afterBaseAnswer(this.refs, "hit");
    if (entry.viaBase === true && entry.expected !== true) this.unsureRefs -= 1;
    this.acked.set(offset, entry.chunk);
    this.o.onChunk?.(entry.chunk);
    this.notify();
  }

  private onChunkError(offset: number, failure: WireFailure): void {
    const entry = this.sent.get(offset);
    if (entry === undefined) throw new ProtocolError(`CHUNK_ERR for offset ${offset}, which was not sent`);
    if (failure.code === FENCED) throw new FencedError(`destination: ${failure.message}`);
    if (failure.code === BASE_MISMATCH || failure.code === NO_BASE) {
      this.onBaseMiss(offset, entry, failure.code);
      return;
    }
    if (failure.code !== "CHECKSUM_MISMATCH") throw errorFromWire(failure.code, failure.message, offset);
    // Ended ahead of its acknowledgements (a lent link): the batch is sent again instead.
    if (this.batchEndSent)
      throw new ChecksumMismatchError({
        offset,
        message: `chunk at offset ${offset} failed its CRC32C check after its batch had ended; the batch is sent again`,
      });
    if (entry.resends >= this.o.maxResends) {
      throw new ChecksumMismatchError({
        offset,
        message: `chunk at offset ${offset} was corrupted in transit ${entry.resends + 1} times`,
      });
    }
    entry.resends += 1;
    this.o.log.warn({ offset, resend: entry.resends }, "destination saw a CRC32C mismatch; resending the chunk");
    this.resendQueue.push(offset);
    this.notify();
  }

  /** The destination's base does not have the chunk: its data follows (not a resend of corruption). */
  private onBaseMiss(offset: number, entry: SentChunk, code: typeof BASE_MISMATCH | typeof NO_BASE): void {
    if (entry.viaBase !== true) throw new ProtocolError(`${code} for offset ${offset}, which was not sent as BASE`);
    if (this.batchEndSent)
      throw new ChecksumMismatchError({
        offset,
        message:
          `base chunk at offset ${offset} no longer matched the digests the destination sent ahead, ` +
          "after its batch had ended; the batch is sent again",
      });
    if (entry.expected !== true) this.unsureRefs -= 1;
    this.refs = afterBaseAnswer(this.refs, code === NO_BASE ? "no-base" : "mismatch");
    this.o.log.debug({ offset, code, referring: this.refs.referring }, "base chunk missed; sending its data");
    this.resendQueue.push(offset);
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    if (wake === undefined) this.signalled = true;
    else wake();
  }

  private async throttle(bytes: number): Promise<void> {
    this.check();
    const bucket = this.o.bucket();
    if (bucket !== undefined) {
      const waitMs = reserve(bucket, bytes, performance.now());
      if (waitMs > 0) await sleep(waitMs, undefined, { signal: this.stop.signal }).catch(() => this.check());
    }
    if (this.o.linkTurn !== undefined) await this.o.linkTurn(bytes, this.stop.signal).catch(() => this.check());
    this.check();
  }

  /** Resolves when the bytes were handed to the kernel (so the buffer is free again). */
  private async write(bytes: Uint8Array): Promise<void> {
    if (this.o.sealer !== undefined) return this.writeSealed([bytes]);
    await new Promise<void>((resolve, reject) => {
      this.o.socket.write(bytes, (err) => (err ? reject(this.error ?? unreachable(err)) : resolve()));
    });
  }

  private async sendViaCopy(c: PreparedChunk, head: Uint8Array, tail: readonly Uint8Array[]): Promise<void> {
    const data = c.data;
    const segments =
      data === undefined ? [] : c.segments.map((s) => data.subarray(s.relOffset, s.relOffset + s.length));
    await this.writeCorked([head, ...segments, ...tail]);
  }

  /** Write the parts as one burst; resolves once the last is handed to the kernel. */
  private async writeCorked(parts: readonly Uint8Array[]): Promise<void> {
    const { socket } = this.o;
    if (this.o.sealer !== undefined) return this.writeSealed(parts);
    if (this.o.encrypted === true) {
      // Each write waits for the previous one, so Node never gathers them into one writev.
      for (const part of parts) await this.write(part);
      return;
    }
    socket.cork();
    const last = new Promise<void>((resolve, reject) => {
      parts.forEach((part, i) => {
        if (i < parts.length - 1) socket.write(part);
        else socket.write(part, (err) => (err ? reject(this.error ?? unreachable(err)) : resolve()));
      });
    });
    socket.uncork();
    await last;
  }

  /** What a native write's failure becomes: the session's own first, a dwcp error as it is, else unreachable. */
  private nativeWriteFailure(err: unknown): Error {
    if (this.error !== undefined) return this.error;
    if (err instanceof DwcpError && !(err instanceof SyscallError)) return err;
    return unreachable(err instanceof Error ? err : new Error(String(err)));
  }

  /**
   * Each part one sealed record, sealed in place (a segment's bytes in the chunk buffer are
   * ciphertext afterwards: the buffer is only reused for the next read) and written on the pool,
   * after the held control frames.
   */
  private async writeSealed(parts: readonly Uint8Array[]): Promise<void> {
    const sealer = this.o.sealer as SealedWriter;
    this.check();
    try {
      const held = this.held.splice(0);
      await sealer.send([...held, ...parts].filter((p) => p.length > 0));
    } catch (err) {
      throw this.nativeWriteFailure(err);
    } finally {
      if (this.destroyWhenIdle) this.o.socket.destroy();
    }
  }

  /**
   * Framing rule for zero-copy: the header and segment table go through socket.write() and we
   * wait until Node has flushed them (its write queue is then empty); only then do the segment
   * bytes go straight from the source fd to the socket fd with sendfile(), in table order, and
   * nothing else is written until they are all sent. The byte stream is identical to the copy
   * path; the destination cannot tell the difference.
   */
  private async sendViaSendfile(c: PreparedChunk, head: Uint8Array): Promise<void> {
    await this.write(head);
    const outFd = socketFd(this.o.socket);
    const inFd = this.o.sendfileFrom;
    if (outFd === undefined || inFd === undefined || this.o.socket.writableLength > 0) {
      throw this.error ?? new DestinationUnreachableError("data channel socket closed before sendfile");
    }
    this.sendfileBusy = true;
    try {
      for (const s of c.segments) {
        let done = 0;
        while (done < s.length) {
          this.check();
          const n = await zeroCopy.sendfile(outFd, inFd, c.offset + s.relOffset + done, s.length - done);
          // sendfile stops short only at the end of the input: the source shrank under us.
          if (n <= 0) throw new SourceChangedError(`source ended before offset ${c.offset + s.relOffset + done}`);
          done += n;
        }
      }
    } catch (err) {
      throw this.nativeWriteFailure(err);
    } finally {
      this.sendfileBusy = false;
      if (this.destroyWhenIdle) this.o.socket.destroy();
    }
  }
}

function unreachable(err: Error): DestinationUnreachableError {
  return new DestinationUnreachableError(`data channel write failed: ${err.message}`, { cause: err });
}
