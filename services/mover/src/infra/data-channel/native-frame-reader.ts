import { InvariantViolationError } from "#common/errors.js";
import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { zeroCopy } from "#native/index.js";
import { PullReader } from "#common/secure-link/reader.js";
import type { FrameDecoder, FrameStep } from "../../domain/data-channel/decoder.js";
import { ProtocolError } from "../../errors.js";
import { protocolViolation, type FrameReader } from "./frame-reader.js";

/** Control frames and segment tables are read through this much staging per recv. */
const STAGING_BYTES = 64 * 1024;

export interface NativeFrameReaderOptions {
  /** No byte from the peer for this long fails the read. */
  idleTimeoutMs: number;
  /** What a socket error becomes. */
  mapSocketError?: (err: Error) => Error;
}

/** The longest a reader waiting for its peer sleeps between two looks at the socket. */
const READABLE_POLL_MAX_MS = 20;
/**
 * A native read whose peer sends nothing for this long gives its pool thread back and the reader
 * waits on the event loop again. Otherwise a link cut in the middle of a chunk leaves its read
 * in recv(2) until the idle timeout: four such reads hold every pool thread, and the mover's
 * file I/O, DNS lookups (its NATS reconnect) and the reads of the connections that replace them
 * wait two minutes. Long enough that a flowing link almost never stalls this long.
 */
export const READ_STALL_MS = 250;

/**
 * What the destination's readers on the libuv pool share: the cancel flag the native read polls
 * (abort() sets it, so a read in flight returns within ~50 ms), the read in flight (nobody may
 * close the socket until idle() resolves: its fd could be reused), chunk buffers, and how a read
 * starts and fails.
 *
 * A native read starts only once the socket has bytes (or an EOF or error) to report: until then
 * the reader waits on the event loop, looking at the socket on a timer (1 ms, doubling to 20 ms).
 * A read waiting for a peer that has nothing to send would hold one of the pool's threads
 * (UV_THREADPOOL_SIZE, 4 by default), and the peer may be silent for long: a kept link between
 * batches, or a rate-limited batch whose sender waits for its turn on the migration's shared
 * bucket while another link of the same migration sends. Four such reads held every pool thread,
 * and the link in turn could not get its reads, checksums, writes and fsyncs run: nothing moved
 * until the idle timeout.
 */
export abstract class PoolFrameReader extends PullReader<FrameStep, FrameDecoder> implements FrameReader {
  protected readonly cancel = new Int32Array(new SharedArrayBuffer(4));
  private inflight: Promise<unknown> | undefined;

  constructor(
    protected readonly socket: Socket,
    readonly fd: number,
    decoder: FrameDecoder,
    protected readonly idleTimeoutMs: number,
  ) {
    super(decoder, protocolViolation);
  }

  provideChunkBuffer(target: Uint8Array): void {
    this.decoder.provideChunkBuffer(target);
  }

  protected aborted(): void {
    Atomics.store(this.cancel, 0, 1);
  }

  /** Nothing to unhook: libuv never read this socket. The caller must await idle() first. */
  detach(): void {
    if (this.inflight !== undefined)
      throw new InvariantViolationError(`${this.constructor.name}.detach() with a read in flight: await idle()`);
  }

  /** Resolves once no native read is in flight (after abort(), within ~50 ms). */
  async idle(): Promise<void> {
    await this.inflight?.catch(() => undefined);
  }

  /** What a failed native read (other than the idle timeout) becomes. */
  protected abstract mapError(err: Error): Error;

  /**
   * Wait on the event loop until the socket is readable, then run the native read `start` makes
   * on the pool, keeping it visible to idle() while it runs. A failure recorded by abort() wins;
   * no byte for idleTimeoutMs is a ProtocolError; other failures go through mapError().
   */
  protected async recvNative(start: () => Promise<number>): Promise<number> {
    await this.awaitReadable();
    // Checked in the same turn as the read starts: whoever closes the socket awaits idle() first.
    if (this.failure !== undefined) throw this.failure;
    if (this.socket.destroyed) {
      this.failure = new ProtocolError("data channel socket was destroyed");
      throw this.failure;
    }
    const read = start();
    this.inflight = read;
    try {
      return await read;
    } catch (err) {
      throw this.readFailure(err);
    } finally {
      this.inflight = undefined;
    }
  }

  private readFailure(err: unknown): Error {
    if (this.failure !== undefined) return this.failure;
    const e = err instanceof Error ? err : new Error(String(err));
    if ((e as { sysCode?: string }).sysCode === "ETIMEDOUT") return this.silent();
    return this.mapError(e);
  }

  private silent(): ProtocolError {
    return new ProtocolError(`no traffic for ${this.idleTimeoutMs} ms`);
  }

  /** Resolves once the socket has bytes, an EOF or an error to report; rejects on abort or after the idle timeout. */
  private async awaitReadable(): Promise<void> {
    const until = performance.now() + this.idleTimeoutMs;
    for (let waitMs = 1; ; waitMs = Math.min(READABLE_POLL_MAX_MS, waitMs * 2)) {
      if (this.failure !== undefined) throw this.failure;
      if (this.socket.destroyed || zeroCopy.readable(this.fd)) return;
      if (performance.now() >= until) throw this.silent();
      await sleep(waitMs);
    }
  }
}

/**
 * The destination's frame reader when the native module is loaded: the socket was accepted
 * paused (pauseOnConnect) and libuv never reads it; recv(2) runs on the libuv pool instead, and
 * chunk payloads land straight in the pooled chunk buffer (decoder.directTarget), with no
 * per-64 KiB Buffer, 'data' event or copy on the event loop. Headers and control frames go
 * through a small staging buffer and the decoder as before. The frame loop is the common
 * PullReader's; only how bytes arrive (receive) is native. Writes (replies) still use the
 * socket. abort() sets a flag the native read polls, so the socket is never shut down under a
 * final answer; until the read in flight returns nobody may close the socket (see idle()).
 */
export class NativeFrameReader extends PoolFrameReader {
  private readonly staging = Buffer.alloc(STAGING_BYTES);

  constructor(
    socket: Socket,
    fd: number,
    decoder: FrameDecoder,
    private readonly opts: NativeFrameReaderOptions,
  ) {
    super(socket, fd, decoder, opts.idleTimeoutMs);
  }

  protected mapError(err: Error): Error {
    return this.opts.mapSocketError?.(err) ?? err;
  }

  protected async receive(): Promise<void> {
    const direct = this.decoder.directTarget();
    const got = await this.recvNative(() =>
      direct === undefined
        ? zeroCopy.recv(this.fd, this.staging, 0, 1, STAGING_BYTES, this.idleTimeoutMs, this.cancel, READ_STALL_MS)
        : zeroCopy.recv(
            this.fd,
            direct.target,
            direct.at,
            direct.length,
            direct.length,
            this.idleTimeoutMs,
            this.cancel,
            READ_STALL_MS,
          ),
    );
    if (this.socket.destroyed && this.failure === undefined)
      this.failure = new ProtocolError("data channel socket was destroyed");
    // Stalled (negative): keep what arrived; the next receive() waits for the socket on the
    // event loop. Otherwise fewer bytes than asked for (at least 1 into staging) mean EOF.
    const stalled = got < 0;
    const n = stalled ? -1 - got : got;
    if (n > 0) {
      if (direct === undefined) this.decoder.push(Buffer.from(this.staging.subarray(0, n)));
      else this.decoder.advanceDirect(n);
    }
    if (!stalled && n < (direct?.length ?? 1)) this.ended = true;
  }
}
