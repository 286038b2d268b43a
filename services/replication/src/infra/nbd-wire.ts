// The NBD protocol's constants (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md)
// and the buffer that turns a socket's data into exact byte counts, for the NBD client.

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const REPLY_MAGIC = 0x3e889045565a9n;
export const FLAG_FIXED_NEWSTYLE = 1;
export const FLAG_NO_ZEROES = 2;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_SET_META_CONTEXT = 10;
export const REP_ACK = 1;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
export const INFO_EXPORT = 0;
/** Transmission flag: the server honours NBD_CMD_FLAG_DF. */
export const FLAG_SEND_DF = 1 << 7;
/** Command flag: answer a read in one data chunk (no hole chunks; QEMU then skips a block-status walk). */
export const CMD_FLAG_DF = 1 << 2;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const CMD_READ = 0;
export const CMD_DISC = 2;
export const CMD_BLOCK_STATUS = 7;
export const REPLY_FLAG_DONE = 1;
export const CHUNK_NONE = 0;
export const CHUNK_OFFSET_DATA = 1;
export const CHUNK_OFFSET_HOLE = 2;
export const CHUNK_BLOCK_STATUS = 5;
export const CHUNK_ERROR_BIT = 0x8000;
/** Longest option reply or structured chunk accepted (a read is at most `maxRead` plus headers). */
export const MAX_OPTION_REPLY = 64 * 1024;

/** Buffers what the socket delivers and hands out exact byte counts, copying only across parts. */
export class Incoming {
  private parts: Buffer[] = [];
  private size = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failed: Error | undefined;

  push(b: Buffer): void {
    this.parts.push(b);
    this.size += b.length;
    this.wake();
  }

  fail(err: Error): void {
    this.failed ??= err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(this.failed);
    }
  }

  take(n: number): Promise<Buffer> {
    if (this.size >= n) return Promise.resolve(this.cut(n));
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private wake(): void {
    if (this.waiter && this.size >= this.waiter.n) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(this.cut(w.n));
    }
  }

  private cut(n: number): Buffer {
    this.size -= n;
    const first = this.parts[0]!;
    if (first.length >= n) {
      if (first.length === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const p = this.parts[0]!;
      const k = Math.min(p.length, n - at);
      p.copy(out, at, 0, k);
      at += k;
      if (k === p.length) this.parts.shift();
      else this.parts[0] = p.subarray(k);
    }
    return out;
  }
}
