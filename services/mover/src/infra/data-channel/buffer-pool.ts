/**
 * A fixed number of equally sized buffers, handed out and returned. acquire() waits while all
 * are in use, which is how a connection's memory stays bounded: the socket is not read further
 * until a buffer frees up, and TCP flow control holds the sender back. Buffers are allocated on
 * first use (ensure), so an idle connection costs nothing.
 */
export class BufferPool {
  private free: Buffer[] = [];
  private readonly waiters: ((b: Buffer) => void)[] = [];
  private size = 0;

  constructor(private readonly count: number) {}

  /** Make every buffer at least `bytes` long. Only call while no buffer is out. */
  ensure(bytes: number): void {
    if (bytes <= this.size) return;
    if (this.size > 0 && this.free.length !== this.count) throw new Error("cannot grow a pool with buffers in use");
    this.size = bytes;
    // Off the shared slab: these are large and live as long as the connection. Contents are
    // not zeroed; every user overwrites (or zero-fills) the part it uses.
    this.free = Array.from({ length: this.count }, () => Buffer.allocUnsafeSlow(bytes));
  }

  async acquire(): Promise<Buffer> {
    const b = this.free.pop();
    if (b !== undefined) return b;
    if (this.size === 0) throw new Error("BufferPool.ensure() was never called");
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(b: Buffer): void {
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter(b);
    else this.free.push(b);
  }
}
