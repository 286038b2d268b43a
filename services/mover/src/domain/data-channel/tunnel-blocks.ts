/**
 * Tunnel blocks: how a compressed tunnel carries its source → destination bytes. When TUNNEL_OPEN
 * names a codec, that direction is a sequence of blocks, each a 9-byte header and its data:
 *
 *   u8 codec (0 stored, 1 lz4, 2 zstd) | u32 rawLength | u32 dataLength | data
 *
 * A stored block's data is its raw bytes (dataLength = rawLength); a compressed block's data
 * decodes to exactly rawLength bytes and is never longer than them (the sender stores a block
 * that does not shrink). Blocks are at most MAX_TUNNEL_BLOCK raw bytes, so the destination never
 * holds more than one block's bytes per stage. The other direction stays raw. Pure: the sockets
 * and codecs are in infra/data-channel/tunnel-codec.ts.
 */
import { ByteQueue } from "#common/secure-link/byte-queue.js";
import type { PackedCodec } from "./frames.js";

export const TUNNEL_BLOCK_HEADER_BYTES = 9;
/** Largest raw block. */
export const MAX_TUNNEL_BLOCK = 1024 * 1024;

export type BlockCodec = PackedCodec | "none";
const CODE: Record<BlockCodec, number> = { none: 0, lz4: 1, zstd: 2 };
const CODEC_OF: readonly BlockCodec[] = ["none", "lz4", "zstd"];

export interface TunnelBlock {
  codec: BlockCodec;
  rawLength: number;
  data: Uint8Array;
}

export function encodeBlockHeader(codec: BlockCodec, rawLength: number, dataLength: number): Uint8Array {
  const h = new Uint8Array(TUNNEL_BLOCK_HEADER_BYTES);
  const v = new DataView(h.buffer);
  v.setUint8(0, CODE[codec]);
  v.setUint32(1, rawLength);
  v.setUint32(5, dataLength);
  return h;
}

export type BlockStep = TunnelBlock | { kind: "need" } | { kind: "violation"; message: string };

/** Splits the bytes a compressed tunnel carries into blocks, checking each header's bounds. */
export class TunnelBlockDecoder {
  private readonly queue = new ByteQueue();
  private broken: string | undefined;

  get buffered(): number {
    return this.queue.length;
  }

  push(bytes: Uint8Array): void {
    this.queue.push(bytes);
  }

  /** The next whole block, "need" until one has arrived, or a violation (final). */
  next(): BlockStep {
    if (this.broken !== undefined) return { kind: "violation", message: this.broken };
    if (this.queue.length < TUNNEL_BLOCK_HEADER_BYTES) return { kind: "need" };
    const codec = CODEC_OF[this.queue.peekByte(0) ?? 0xff];
    const rawLength = this.queue.peekUint32(1) ?? 0;
    const dataLength = this.queue.peekUint32(5) ?? 0;
    const bad = check(codec, rawLength, dataLength);
    if (bad !== undefined) {
      this.broken = bad;
      return { kind: "violation", message: bad };
    }
    if (this.queue.length < TUNNEL_BLOCK_HEADER_BYTES + dataLength) return { kind: "need" };
    this.queue.take(TUNNEL_BLOCK_HEADER_BYTES);
    return { codec: codec as BlockCodec, rawLength, data: this.queue.take(dataLength) };
  }
}

function check(codec: BlockCodec | undefined, rawLength: number, dataLength: number): string | undefined {
  if (codec === undefined) return "tunnel block with an unknown codec";
  if (rawLength === 0 || rawLength > MAX_TUNNEL_BLOCK)
    return `tunnel block of ${rawLength} raw bytes (1..${MAX_TUNNEL_BLOCK})`;
  if (codec === "none" ? dataLength !== rawLength : dataLength === 0 || dataLength > rawLength)
    return `tunnel block of ${dataLength} ${codec} bytes for ${rawLength} raw bytes`;
  return undefined;
}
