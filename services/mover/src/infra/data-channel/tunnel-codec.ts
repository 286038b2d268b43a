import { Transform, type TransformCallback } from "node:stream";
import { compressChunk, decompressChunk } from "#native/index.js";
import type { CompressionChoice } from "../../domain/data-channel/compression.js";
import {
  encodeBlockHeader,
  MAX_TUNNEL_BLOCK,
  TunnelBlockDecoder,
  type BlockCodec,
} from "../../domain/data-channel/tunnel-blocks.js";
import { ProtocolError } from "../../errors.js";

// The two ends of a compressed tunnel (domain/data-channel/tunnel-blocks.ts): BlockCompressor at
// the source turns the bytes QEMU writes into blocks, BlockDecompressor at the destination turns
// them back, both as stream Transforms, so backpressure runs through them as through a pipe.

/**
 * Bytes that make a block without waiting. While blocks are being compressed the next gathers
 * what arrives meanwhile, so a busy compressor makes larger blocks (fewer hops to the pool, a
 * better ratio) and a quiet stream goes out at the end of its event-loop turn.
 */
export const TUNNEL_BLOCK_TARGET = 256 * 1024;

/** Blocks compressed at once (on the native module's pool), pushed in order. */
export const TUNNEL_BLOCKS_IN_FLIGHT = 2;

/** A block being compressed: its header and data once done. */
interface Slot {
  out?: Buffer[];
}

/** Source side: raw bytes in, blocks out. `rawBytes` and `wireBytes` count what passed. */
export class BlockCompressor extends Transform {
  rawBytes = 0;
  wireBytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Blocks being compressed, oldest first. */
  private readonly slots: Slot[] = [];
  /** A write held while a block's worth waits for a free slot (the backpressure). */
  private held: TransformCallback | undefined;
  /** The end of the input, waiting for the last blocks. */
  private ending: TransformCallback | undefined;
  private flushQueued = false;

  constructor(private readonly choice: CompressionChoice & { codec: Exclude<BlockCodec, "none"> }) {
    super({ writableHighWaterMark: TUNNEL_BLOCK_TARGET, readableHighWaterMark: TUNNEL_BLOCK_TARGET });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.rawBytes += chunk.length;
    if (this.pendingBytes >= TUNNEL_BLOCK_TARGET && this.slots.length < TUNNEL_BLOCKS_IN_FLIGHT) this.startBlock();
    if (this.pendingBytes >= TUNNEL_BLOCK_TARGET) {
      this.held = done;
      return;
    }
    done();
    // Bytes short of a block (an NBD reply, a RAM pass's end) go out at the end of this turn if
    // no block is being compressed; otherwise what arrives meanwhile joins them in the next block.
    if (this.pendingBytes > 0 && !this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => {
        this.flushQueued = false;
        if (this.pendingBytes > 0 && this.slots.length === 0) this.startBlock();
      });
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingBytes > 0) this.startBlock();
    if (this.slots.length === 0) done();
    else this.ending = done;
  }

  /** Compresses what is pending as one block (several past MAX_TUNNEL_BLOCK) in a new slot. */
  private startBlock(): void {
    const all = this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    const slot: Slot = {};
    this.slots.push(slot);
    this.compress(all).then(
      (out) => {
        slot.out = out;
        this.settled();
      },
      (err: unknown) => this.destroy(err as Error),
    );
  }

  /** Pushes the finished blocks at the head in order, then refills the freed slots. */
  private settled(): void {
    for (let head = this.slots[0]; head?.out !== undefined; head = this.slots[0]) {
      this.slots.shift();
      for (const b of head.out) {
        this.wireBytes += b.length;
        this.push(b);
      }
    }
    if (this.pendingBytes > 0 && this.slots.length < TUNNEL_BLOCKS_IN_FLIGHT) this.startBlock();
    const held = this.held;
    if (held !== undefined && this.pendingBytes < TUNNEL_BLOCK_TARGET) {
      this.held = undefined;
      held();
    }
    const ending = this.ending;
    if (ending !== undefined && this.slots.length === 0) {
      this.ending = undefined;
      ending();
    }
  }

  private async compress(all: Buffer): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (let at = 0; at < all.length; at += MAX_TUNNEL_BLOCK) {
      const raw = all.subarray(at, Math.min(all.length, at + MAX_TUNNEL_BLOCK));
      const packed = await compressChunk(raw, { codec: this.choice.codec, level: this.choice.level });
      out.push(Buffer.from(encodeBlockHeader(packed.codec, raw.length, packed.data.length)));
      out.push(Buffer.from(packed.data.buffer, packed.data.byteOffset, packed.data.byteLength));
    }
    return out;
  }
}

/** Destination side: blocks in, raw bytes out; a malformed or undecodable block is an error. */
export class BlockDecompressor extends Transform {
  private readonly decoder = new TunnelBlockDecoder();

  constructor() {
    super({ writableHighWaterMark: TUNNEL_BLOCK_TARGET, readableHighWaterMark: TUNNEL_BLOCK_TARGET });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.decoder.push(chunk);
    this.drain().then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    done(this.decoder.buffered > 0 ? new ProtocolError("the tunnel ended inside a block") : undefined);
  }

  private async drain(): Promise<void> {
    for (;;) {
      const step = this.decoder.next();
      if ("kind" in step) {
        if (step.kind === "need") return;
        throw new ProtocolError(step.message);
      }
      this.push(await decompressChunk({ codec: step.codec, data: step.data, rawLength: step.rawLength }));
    }
  }
}
