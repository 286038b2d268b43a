import { DIRECT_IO_ALIGN, zeroCopy } from "#native/index.js";
import { InvariantViolationError } from "#common/errors.js";

/**
 * Chunk buffers kept for reuse across batches and connections, by size. Fresh memory is slow to
 * fill the first time (page faults; on a VM also the host's), so buffers are pre-faulted once and
 * recycled rather than allocated per batch. With the native module they start on a 4 KiB
 * boundary, so the destination can write them with O_DIRECT. Free buffers are capped at
 * `maxFreeBytes` per size; beyond that a returned buffer is left to the GC.
 */
export class ChunkBufferCache {
  private readonly free = new Map<number, Buffer[]>();
  /** Backing ArrayBuffers of aligned buffers, with the byte offset where the aligned view starts. */
  private readonly aligned = new WeakMap<ArrayBufferLike, number>();

  constructor(private readonly maxFreeBytes = 64 * 1024 * 1024) {}

  take(size: number): Buffer {
    const b = this.free.get(size)?.pop();
    if (b !== undefined) return b;
    if (!zeroCopy.available) return Buffer.alloc(size); // zero-filled: pre-faulted
    const fresh = zeroCopy.alignedBuffer(size);
    this.aligned.set(fresh.buffer, fresh.byteOffset);
    return fresh;
  }

  give(b: Buffer): void {
    const list = this.free.get(b.length) ?? [];
    if ((list.length + 1) * b.length > this.maxFreeBytes && list.length > 0) return;
    list.push(b);
    this.free.set(b.length, list);
  }

  /**
   * Allocates and pre-faults up to `count` free buffers of `size` (within maxFreeBytes), so the
   * first batches do not pay the page faults: ~100 ms of a 2 GiB migration's destination CPU.
   */
  prefill(size: number, count: number): void {
    const list = this.free.get(size) ?? [];
    const room = Math.max(0, Math.floor(this.maxFreeBytes / size) - list.length);
    for (let i = Math.min(count - list.length, room); i > 0; i--) list.push(this.take(size));
    this.free.set(size, list);
  }

  /** Whether `view` (a buffer from take(), or a view into one) starts on an O_DIRECT boundary. */
  isAligned(view: Uint8Array): boolean {
    const base = this.aligned.get(view.buffer);
    return base !== undefined && (view.byteOffset - base) % DIRECT_IO_ALIGN === 0;
  }
}

/**
 * The buffer size a batch needs: its chunk size, or less when the volume ends within the batch's
 * first chunk (a small volume), rounded up to DIRECT_IO_ALIGN. A thousand 64 KiB volumes then
 * take 64 KiB buffers, not 4 MiB ones each.
 */
export function batchBufferBytes(b: { chunkSizeBytes: number; volumeSizeBytes: number; firstChunk: number }): number {
  const rest = b.volumeSizeBytes - b.firstChunk * b.chunkSizeBytes;
  const aligned = Math.ceil(Math.max(1, rest) / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
  return Math.min(b.chunkSizeBytes, aligned);
}

/** The process's cache: source and destination sides of every data channel share it. */
export const chunkBuffers = new ChunkBufferCache();

/**
 * A fixed number of equally sized buffers, handed out and returned. acquire() waits while all
 * are in use, which is how a connection's memory stays bounded: the socket is not read further
 * until a buffer frees up, and TCP flow control holds the sender back. Buffers come from the
 * shared cache on first use (ensure) and go back to it on dispose(), so an idle connection
 * costs nothing and a new batch reuses pre-faulted memory.
 */
export class BufferPool {
  private free: Buffer[] = [];
  private readonly waiters: ((b: Buffer) => void)[] = [];
  private size = 0;

  constructor(
    private readonly count: number,
    private readonly cache: ChunkBufferCache = chunkBuffers,
  ) {}

  /** Make every buffer at least `bytes` long. Only call while no buffer is out. */
  ensure(bytes: number): void {
    if (bytes <= this.size) return;
    if (this.size > 0 && this.free.length !== this.count)
      throw new InvariantViolationError("cannot grow a pool with buffers in use");
    for (const b of this.free) this.cache.give(b);
    this.size = bytes;
    this.free = Array.from({ length: this.count }, () => this.cache.take(bytes));
  }

  async acquire(): Promise<Buffer> {
    const b = this.free.pop();
    if (b !== undefined) return b;
    if (this.size === 0) throw new InvariantViolationError("BufferPool.ensure() was never called");
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(b: Buffer): void {
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter(b);
    else this.free.push(b);
  }

  /** Hand the free buffers back to the cache (call once no buffer is out any more). */
  dispose(): void {
    for (const b of this.free) this.cache.give(b);
    this.free = [];
    this.size = 0;
  }
}
