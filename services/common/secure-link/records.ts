import { ByteQueue } from "./byte-queue.js";
import type { IncrementalDecoder, NeedMore, Violation } from "./reader.js";

/**
 * Length-prefixed records, [u32 BE length][u32 BE id][payload], optionally after a fixed-size
 * preamble (a handshake's nonce or proof). Pure: no I/O. The length is checked against the limit
 * before anything of the payload is buffered beyond what already arrived.
 */
export const RECORD_HEADER_BYTES = 8;

export type RecordStep = { kind: "preamble"; bytes: Uint8Array } | { kind: "record"; id: number; payload: Uint8Array };

export class RecordDecoder implements IncrementalDecoder<RecordStep> {
  private readonly queue = new ByteQueue();
  private failed: string | undefined;

  constructor(
    /** Largest payload accepted, in bytes. */
    readonly maxPayloadBytes: number,
    /** Bytes of the preamble to hand over before the first record. Default 0 (none). */
    private preambleBytes = 0,
  ) {}

  get buffered(): number {
    return this.queue.length;
  }

  get atFrameBoundary(): boolean {
    return this.queue.length === 0;
  }

  push(bytes: Uint8Array): void {
    this.queue.push(bytes);
  }

  next(): RecordStep | NeedMore | Violation {
    if (this.failed !== undefined) return { kind: "violation", message: this.failed };
    if (this.preambleBytes > 0) {
      if (this.queue.length < this.preambleBytes) return { kind: "need-more" };
      const bytes = this.queue.take(this.preambleBytes);
      this.preambleBytes = 0;
      return { kind: "preamble", bytes };
    }
    const length = this.queue.peekUint32(0);
    if (length === undefined) return { kind: "need-more" };
    if (length > this.maxPayloadBytes) {
      this.failed = `record of ${length} bytes exceeds ${this.maxPayloadBytes}`;
      return { kind: "violation", message: this.failed };
    }
    if (this.queue.length < RECORD_HEADER_BYTES + length) return { kind: "need-more" };
    const id = this.queue.peekUint32(4) ?? 0;
    this.queue.take(RECORD_HEADER_BYTES);
    return { kind: "record", id, payload: this.queue.take(length) };
  }
}

/** Header and payload of one record, to write in this order (the payload is not copied). */
export function encodeRecord(id: number, payload: Uint8Array): [Buffer, Uint8Array] {
  const header = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt32BE(id >>> 0, 4);
  return [header, payload];
}
