import { InvariantViolationError } from "#common/errors.js";
import type { Socket } from "node:net";
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
/**
 * What the destination's readers on the libuv pool share: the cancel flag the native read polls
 * (abort() sets it, so a read in flight returns within ~50 ms), the read in flight (nobody may
 * close the socket until idle() resolves: its fd could be reused), and chunk buffers.
 */
export abstract class PoolFrameReader extends PullReader<FrameStep, FrameDecoder> implements FrameReader {
  protected readonly cancel = new Int32Array(new SharedArrayBuffer(4));
  private inflight: Promise<unknown> | undefined;

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

  /** Await a native read, keeping it visible to idle() while it runs. */
  protected async track<T>(read: Promise<T>): Promise<T> {
    this.inflight = read;
    try {
      return await read;
    } finally {
      this.inflight = undefined;
    }
  }
}

export class NativeFrameReader extends PoolFrameReader {
  private readonly staging = Buffer.alloc(STAGING_BYTES);
  private readonly mapError: (err: Error) => Error;

  constructor(
    private readonly socket: Socket,
    private readonly fd: number,
    decoder: FrameDecoder,
    private readonly opts: NativeFrameReaderOptions,
  ) {
    super(decoder, protocolViolation);
    this.mapError = opts.mapSocketError ?? ((err) => err);
  }

  protected async receive(): Promise<void> {
    const direct = this.decoder.directTarget();
    const read =
      direct === undefined
        ? zeroCopy.recv(this.fd, this.staging, 0, 1, STAGING_BYTES, this.opts.idleTimeoutMs, this.cancel)
        : zeroCopy.recv(
            this.fd,
            direct.target,
            direct.at,
            direct.length,
            direct.length,
            this.opts.idleTimeoutMs,
            this.cancel,
          );
    let n: number;
    try {
      n = await this.track(read);
    } catch (err) {
      if (this.failure !== undefined) throw this.failure;
      const e = err instanceof Error ? err : new Error(String(err));
      const code = (e as { sysCode?: string }).sysCode;
      if (code === "ETIMEDOUT") throw new ProtocolError(`no traffic for ${this.opts.idleTimeoutMs} ms`);
      throw this.mapError(e);
    }
    if (this.socket.destroyed && this.failure === undefined)
      this.failure = new ProtocolError("data channel socket was destroyed");
    if (direct === undefined) {
      if (n === 0) this.ended = true;
      else this.decoder.push(Buffer.from(this.staging.subarray(0, n)));
      return;
    }
    if (n > 0) this.decoder.advanceDirect(n);
    if (n < direct.length) this.ended = true;
  }
}
