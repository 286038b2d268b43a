import type { Socket } from "node:net";
import type { DecodeStep, FrameDecoder } from "../../domain/data-channel/decoder.js";
import { ProtocolError } from "../../errors.js";

export type ReaderStep = Exclude<DecodeStep, { kind: "need-more" } | { kind: "violation" }> | { kind: "end" };

/** What a data-channel session needs from whoever reads its socket (JS stream or native recv). */
export interface FrameReader {
  readonly decoder: FrameDecoder;
  /** Resolves with the next frame, chunk step, or end (clean EOF between frames). */
  next(): Promise<ReaderStep>;
  provideChunkBuffer(target: Uint8Array): void;
  /** Make a pending or future next() reject with `err` (first failure wins). */
  abort(err: Error): void;
  /** Stop reading; only once idle() resolved. */
  detach(): void;
  /** Resolves once no read is in flight that could still touch the socket's fd. */
  idle(): Promise<void>;
}

export interface FrameReaderOptions {
  /** Pause the socket once this many undecoded bytes are buffered. Default 1 MiB. */
  highWaterBytes?: number;
  /** What a socket error becomes (the server keeps it, the client makes it retryable). */
  mapSocketError?: (err: Error) => Error;
}

/**
 * Pull-style frame reader over a socket: next() resolves with the next decoded step. Decoded
 * but unconsumed input is bounded by pausing the socket, so a peer that sends faster than we
 * write to disk is held back by TCP flow control rather than by our memory.
 */
export class SocketFrameReader implements FrameReader {
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: Error | undefined;
  private readonly highWater: number;
  private readonly mapError: (err: Error) => Error;

  constructor(
    private readonly socket: Socket,
    readonly decoder: FrameDecoder,
    opts: FrameReaderOptions = {},
  ) {
    this.highWater = opts.highWaterBytes ?? 1024 * 1024;
    this.mapError = opts.mapSocketError ?? ((err) => err);
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
    socket.on("error", this.onError);
  }

  /** Resolves with the next frame, chunk step, or end (clean EOF between frames). */
  async next(): Promise<ReaderStep> {
    for (;;) {
      if (this.failure !== undefined) throw this.failure;
      const step = this.decoder.next();
      if (step.kind === "violation") throw new ProtocolError(step.message);
      if (this.socket.isPaused() && this.decoder.buffered < this.highWater / 2) this.socket.resume();
      if (step.kind !== "need-more") return step;
      if (this.ended) {
        if (this.decoder.atFrameBoundary) return { kind: "end" };
        throw new ProtocolError("connection closed in the middle of a frame");
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  provideChunkBuffer(target: Uint8Array): void {
    this.decoder.provideChunkBuffer(target);
  }

  /** Make a pending or future next() reject with `err` (first failure wins). */
  abort(err: Error): void {
    this.failure ??= err;
    this.notify();
  }

  /** Stop listening; whatever the socket delivers from now on is not decoded. */
  detach(): void {
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onEnd);
    this.socket.off("error", this.onError);
  }

  /** libuv's reads need no waiting for. */
  async idle(): Promise<void> {}

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private readonly onData = (bytes: Buffer): void => {
    this.decoder.push(bytes);
    if (this.decoder.buffered >= this.highWater) this.socket.pause();
    this.notify();
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    this.notify();
  };

  private readonly onError = (err: Error): void => {
    this.abort(this.mapError(err));
  };
}
