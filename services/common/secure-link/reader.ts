import type { Socket } from "node:net";

/** The two answers every incremental decoder gives besides a decoded step. */
export type NeedMore = { kind: "need-more" };
export type Violation = { kind: "violation"; message: string };

/**
 * A pure, incremental decoder: push() whatever the transport delivered, call next() until it
 * answers need-more. Both link protocols implement it: the mover's data-channel FrameDecoder and
 * RecordDecoder (records.ts) for the replication link.
 */
export interface IncrementalDecoder<S extends { kind: string }> {
  push(bytes: Uint8Array): void;
  next(): S | NeedMore | Violation;
  /** Bytes received and not yet consumed. */
  readonly buffered: number;
  /** True between frames: nothing of a frame has been consumed yet. */
  readonly atFrameBoundary: boolean;
}

export type ReadStep<S> = S | { kind: "end" };

/**
 * The one frame reader: pull-style, next() resolves with the next decoded step or `end` (a clean
 * EOF between frames), and rejects on a protocol violation, a close inside a frame, or abort().
 * Subclasses only say how bytes arrive (receive()): Node's stream reads (SocketReader) or the
 * mover's native recv straight into chunk buffers.
 */
export abstract class PullReader<S extends { kind: string }, D extends IncrementalDecoder<S> = IncrementalDecoder<S>> {
  protected failure: Error | undefined;
  protected ended = false;

  constructor(
    readonly decoder: D,
    /** What a violation or a close inside a frame becomes (each protocol has its error). */
    protected readonly violation: (message: string) => Error,
  ) {}

  async next(): Promise<ReadStep<S>> {
    for (;;) {
      if (this.failure !== undefined) throw this.failure;
      const step = this.decoder.next();
      if (step.kind === "violation") throw this.violation((step as Violation).message);
      const needMore = step.kind === "need-more";
      this.decoded(needMore);
      if (!needMore) return step as S;
      if (this.ended) {
        if (this.decoder.atFrameBoundary) return { kind: "end" };
        throw this.violation("connection closed in the middle of a frame");
      }
      await this.receive();
    }
  }

  /** Make a pending or future next() reject with `err` (first failure wins). */
  abort(err: Error): void {
    this.failure ??= err;
    this.aborted();
  }

  /** Wait for more bytes (or the end, or a failure); sets `ended` at EOF. */
  protected abstract receive(): Promise<void>;
  /** Called after abort() recorded its failure. */
  protected abstract aborted(): void;
  /** Called after every decode; `needMore`: the decoder cannot go on without more bytes. */
  protected decoded(_needMore: boolean): void {}
}

export interface SocketReaderOptions {
  /** Pause the socket once this many undecoded bytes are buffered. Default 1 MiB. */
  highWaterBytes?: number;
  /** What a socket error becomes. Default: itself. */
  mapSocketError?: (err: Error) => Error;
  /** What a protocol violation becomes (each protocol has its error). */
  violation: (message: string) => Error;
}

/**
 * PullReader over Node's stream reads. Decoded but unconsumed input is bounded by pausing the
 * socket, so a peer that sends faster than we consume is held back by TCP flow control rather
 * than by our memory; a decoder that needs more than the high-water mark to finish a frame
 * still gets it (a paused socket resumes whenever the decoder asks for more).
 */
export class SocketReader<S extends { kind: string }, D extends IncrementalDecoder<S> = IncrementalDecoder<S>>
  extends PullReader<S, D>
  implements AsyncIterable<S>
{
  private wake: (() => void) | undefined;
  private readonly highWater: number;
  private readonly mapError: (err: Error) => Error;

  constructor(
    protected readonly socket: Socket,
    decoder: D,
    opts: SocketReaderOptions,
  ) {
    super(decoder, opts.violation);
    this.highWater = opts.highWaterBytes ?? 1024 * 1024;
    this.mapError = opts.mapSocketError ?? ((err) => err);
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
    socket.on("error", this.onError);
  }

  /** Steps until the end; a failure rejects the iteration. */
  async *[Symbol.asyncIterator](): AsyncIterator<S> {
    for (;;) {
      const step = await this.next();
      if (step.kind === "end") return;
      yield step as S;
    }
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

  protected override decoded(needMore: boolean): void {
    if (this.socket.isPaused() && (needMore || this.decoder.buffered < this.highWater / 2)) this.socket.resume();
  }

  protected receive(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wake = resolve;
    });
  }

  protected aborted(): void {
    this.notify();
  }

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
