import type { Socket } from "node:net";
import { sealed, SEALED_HEADER_BYTES, socketFd, type SealKeys } from "#native/index.js";
import { SEALED_MAX_BYTES, SEALED_MAX_RECORDS } from "#common/secure-link/sealed.js";
import { InvariantViolationError } from "#common/errors.js";
import { HEADER_BYTES, MAX_CHUNK_LENGTH, SEGMENT_ENTRY_BYTES } from "../../domain/data-channel/frames.js";
import { SEGMENT_PAGE_BYTES } from "../../domain/data-channel/segments.js";
import type { FrameDecoder } from "../../domain/data-channel/decoder.js";
import { DestinationUnreachableError, ProtocolError } from "../../errors.js";
import { PoolFrameReader, READ_STALL_MS } from "./native-frame-reader.js";

/**
 * The data channel's sender → destination direction after the switch to sealed records (see
 * #common/secure-link/sealed.ts): every frame the sender writes is a record. The sender seals
 * a control frame, a chunk head and each chunk segment as one record each; the destination
 * receives a segment's record straight into the chunk buffer and opens it there, everything
 * else through a staging buffer and the decoder.
 */

/** A record that is not a chunk segment: a control frame, or a chunk head with its segment table. */
export const SEALED_STAGING_BYTES = HEADER_BYTES + (MAX_CHUNK_LENGTH / SEGMENT_PAGE_BYTES) * SEGMENT_ENTRY_BYTES;

/** The sending end: seals and writes on the libuv pool, straight to the socket's fd. */
export class SealedWriter {
  private counter = 0n;
  private bytes = 0;
  private readonly cancel = new Int32Array(new SharedArrayBuffer(4));
  /** A native write is in flight: the socket must not be closed under it (its fd could be reused). */
  busy = false;

  private constructor(
    private readonly fd: number,
    private readonly keys: SealKeys,
    private readonly timeoutMs: number,
  ) {}

  /** Undefined when the socket has no fd (closed) or the native module is absent. */
  static of(socket: Socket, keys: SealKeys, timeoutMs: number): SealedWriter | undefined {
    const fd = socketFd(socket);
    return fd === undefined || !sealed.available ? undefined : new SealedWriter(fd, keys, timeoutMs);
  }

  /**
   * Seal each part as one record, in place (the parts hold ciphertext afterwards), and write
   * them in order; resolves once the kernel has them. One write at a time.
   */
  async send(parts: readonly Uint8Array[]): Promise<void> {
    if (this.busy) throw new InvariantViolationError("SealedWriter.send() while a send is in flight");
    const bytes = parts.reduce((sum, p) => sum + p.length, 0);
    if (this.counter + BigInt(parts.length) > SEALED_MAX_RECORDS || this.bytes + bytes > SEALED_MAX_BYTES)
      throw new DestinationUnreachableError("the data link's sealing key reached its bound; a new link takes over");
    const first = this.counter;
    this.counter += BigInt(parts.length);
    this.bytes += bytes;
    this.busy = true;
    try {
      await sealed.sealSend(this.fd, this.keys, first, parts, this.timeoutMs, this.cancel);
    } finally {
      this.busy = false;
    }
  }

  /** Make a write in flight give up within ~50 ms. */
  stop(): void {
    Atomics.store(this.cancel, 0, 1);
  }
}

export interface SealedFrameReaderOptions {
  /** No byte from the peer for this long fails the read. */
  idleTimeoutMs: number;
}

/**
 * The destination's frame reader on a sealed link: one native recv-and-open per record on the
 * libuv pool, a segment straight into the pooled chunk buffer (decoder.directTarget), the rest
 * through staging and the decoder. Like NativeFrameReader, a read starts only once the socket is
 * readable, nobody may close the socket while one is in flight (see idle()), and abort() sets the
 * flag it polls.
 */
export class SealedFrameReader extends PoolFrameReader {
  private readonly staging = Buffer.alloc(SEALED_STAGING_BYTES);
  private readonly header = Buffer.alloc(SEALED_HEADER_BYTES);
  /** The record in progress across reads that stalled (header and body bytes received). */
  private readonly progress = new Int32Array(2);
  private counter = 0n;

  constructor(
    socket: Socket,
    fd: number,
    decoder: FrameDecoder,
    private readonly keys: SealKeys,
    opts: SealedFrameReaderOptions,
  ) {
    super(socket, fd, decoder, opts.idleTimeoutMs);
  }

  /** A forged or out-of-order record ends the link: nothing of it reaches the decoder. */
  protected mapError(err: Error): Error {
    return new ProtocolError(`sealed data record refused: ${err.message}`, { cause: err });
  }

  protected async receive(): Promise<void> {
    const direct = this.decoder.directTarget();
    const target = direct?.target ?? this.staging;
    const at = direct?.at ?? 0;
    const capacity = direct?.length ?? this.staging.length;
    const n = await this.recvNative(() =>
      sealed.recvOpen(
        this.fd,
        this.keys,
        this.counter,
        this.header,
        target,
        at,
        capacity,
        this.idleTimeoutMs,
        this.cancel,
        { progress: this.progress, stallMs: READ_STALL_MS },
      ),
    );
    // Stalled inside the record: the next receive() waits for the socket, then continues it.
    if (n === -2) return;
    this.counter += 1n;
    if (this.socket.destroyed && this.failure === undefined)
      this.failure = new ProtocolError("data channel socket was destroyed");
    if (n < 0) this.ended = true;
    else if (direct !== undefined) this.decoder.advanceDirect(n);
    else this.decoder.push(Buffer.from(this.staging.subarray(0, n)));
  }
}
