import { HEADER_BYTES } from "../../services/mover/src/domain/data-channel/frames.js";

/**
 * Walks one direction of a DWCP data-channel byte stream as it passes a test proxy, frame by
 * frame, whatever the TCP segmentation: onHeader() sees each 32-byte header, onPayload() each
 * run of payload bytes in place (it may rewrite them), onEnd() the end of each frame.
 */
export abstract class FrameWalker {
  private header = Buffer.alloc(0);
  private left = 0;
  private at = 0;
  private inPayload = false;
  private raw = false;

  /** Walk `chunk` (rewritten in place by onPayload) and return it. */
  walk(chunk: Buffer): Buffer {
    let i = 0;
    while (i < chunk.length && !this.raw) {
      if (this.inPayload) {
        const n = Math.min(this.left, chunk.length - i);
        this.onPayload(chunk, i, n, this.at);
        this.left -= n;
        this.at += n;
        i += n;
        if (this.left === 0) this.end();
        continue;
      }
      const take = Math.min(HEADER_BYTES - this.header.length, chunk.length - i);
      this.header = Buffer.concat([this.header, chunk.subarray(i, i + take)]);
      i += take;
      if (this.header.length === HEADER_BYTES) this.begin();
    }
    return chunk;
  }

  /** A frame's header passed; payload length is at byte 8. */
  protected abstract onHeader(header: Buffer): void;
  /** `chunk[from, from+n)` are the frame's payload bytes `[at, at+n)`. */
  protected abstract onPayload(chunk: Buffer, from: number, n: number, at: number): void;
  protected onEnd(): void {}

  /**
   * The bytes after the frame that just ended are no frames (a tunnel's stream after TUNNEL_OPEN
   * or TUNNEL_OK): from here on walk() passes everything through untouched.
   */
  protected stopWalking(): void {
    this.raw = true;
  }

  private begin(): void {
    const h = this.header;
    this.header = Buffer.alloc(0);
    this.left = h.readUInt32BE(8);
    this.at = 0;
    this.inPayload = true;
    this.onHeader(h);
    if (this.left === 0) this.end();
  }

  private end(): void {
    this.inPayload = false;
    this.onEnd();
  }
}
