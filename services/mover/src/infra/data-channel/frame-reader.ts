import type { Socket } from "node:net";
import { SocketReader, type ReadStep } from "#common/secure-link/reader.js";
import type { FrameDecoder, FrameStep } from "../../domain/data-channel/decoder.js";
import { ProtocolError } from "../../errors.js";

export type ReaderStep = ReadStep<FrameStep>;

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

export const protocolViolation = (message: string): Error => new ProtocolError(message);

/** The data channel over Node's stream reads: the common SocketReader with chunk buffers. */
export class SocketFrameReader extends SocketReader<FrameStep, FrameDecoder> implements FrameReader {
  constructor(socket: Socket, decoder: FrameDecoder, opts: FrameReaderOptions = {}) {
    super(socket, decoder, { ...opts, violation: protocolViolation });
  }

  provideChunkBuffer(target: Uint8Array): void {
    this.decoder.provideChunkBuffer(target);
  }
}

/**
 * Stops libuv reading the socket, as if it had been accepted with pauseOnConnect and never
 * resumed: pause() alone only stops the stream's flow, while libuv would go on reading into
 * Node's buffers the bytes the native recv must get.
 */
export function stopReading(socket: Socket): void {
  socket.pause();
  type Handle = { reading?: boolean; readStop?: () => number; _parent?: Handle };
  const handle = (socket as unknown as { _handle?: Handle })._handle;
  if (handle?.reading === true) {
    handle.reading = false;
    handle.readStop?.();
  }
  // A TLS socket's handle wraps the TCP one, which must stop too: TLS reads ahead.
  handle?._parent?.readStop?.();
}
