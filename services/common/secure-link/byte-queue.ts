import { InvariantViolationError } from "#common/errors.js";

/**
 * Bytes received but not yet decoded, kept as the original fragments (no copy on push). Reads
 * that fall inside one fragment return a view; reads spanning fragments copy into a new array
 * whose size the caller has already bounded.
 */
export class ByteQueue {
  private readonly parts: Uint8Array[] = [];
  private headOffset = 0;
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.parts.push(bytes);
    this.total += bytes.length;
  }

  /** The byte at `index` from the front, without consuming it. */
  peekByte(index: number): number | undefined {
    let i = index + this.headOffset;
    for (const part of this.parts) {
      if (i < part.length) return part[i];
      i -= part.length;
    }
    return undefined;
  }

  /** The big-endian u32 at `index` from the front, without consuming it; undefined if not all there. */
  peekUint32(index: number): number | undefined {
    if (index + 4 > this.total) return undefined;
    let v = 0;
    for (let i = 0; i < 4; i++) v = v * 256 + (this.peekByte(index + i) ?? 0);
    return v;
  }

  /** Remove and return the next `n` bytes; `n` must not exceed `length`. */
  take(n: number): Uint8Array {
    this.assertAvailable(n);
    const first = this.parts[0];
    if (first !== undefined && first.length - this.headOffset >= n) {
      const view = first.subarray(this.headOffset, this.headOffset + n);
      this.advance(n);
      return view;
    }
    const out = new Uint8Array(n);
    this.copyInto(out, 0, n);
    return out;
  }

  /** Move the next `n` bytes into `target` at `at`; `n` must not exceed `length`. */
  copyInto(target: Uint8Array, at: number, n: number): void {
    this.assertAvailable(n);
    let copied = 0;
    while (copied < n) {
      const first = this.parts[0];
      if (first === undefined) throw new InvariantViolationError("byte queue underflow");
      const count = Math.min(first.length - this.headOffset, n - copied);
      target.set(first.subarray(this.headOffset, this.headOffset + count), at + copied);
      copied += count;
      this.advance(count);
    }
  }

  private advance(n: number): void {
    this.total -= n;
    this.headOffset += n;
    while (this.parts.length > 0 && this.headOffset >= (this.parts[0]?.length ?? 0)) {
      this.headOffset -= this.parts[0]?.length ?? 0;
      this.parts.shift();
    }
  }

  private assertAvailable(n: number): void {
    if (n > this.total) throw new RangeError(`asked for ${n} bytes, ${this.total} buffered`);
  }
}
