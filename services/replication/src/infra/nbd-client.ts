import { connect, type Socket } from "node:net";
import { DwcpError } from "#common/errors.js";

// A small read-only NBD client (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md)
// for QEMU's NBD server on a unix socket: fixed newstyle handshake, structured replies, one meta
// context, NBD_CMD_READ and NBD_CMD_BLOCK_STATUS. Requests are issued one at a time (the socket
// is local; a replication reads a few MiB of changed blocks), so replies never interleave.

/** The NBD server refused something, sent something malformed, or the connection failed. */
export class NbdError extends DwcpError {
  readonly code = "NBD_ERROR";
  readonly retryable = true;
}

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const REPLY_MAGIC = 0x3e889045565a9n;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const OPT_STRUCTURED_REPLY = 8;
const OPT_SET_META_CONTEXT = 10;
const REP_ACK = 1;
const REP_INFO = 3;
const REP_META_CONTEXT = 4;
const INFO_EXPORT = 0;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const CMD_READ = 0;
const CMD_DISC = 2;
const CMD_BLOCK_STATUS = 7;
const REPLY_FLAG_DONE = 1;
const CHUNK_NONE = 0;
const CHUNK_OFFSET_DATA = 1;
const CHUNK_OFFSET_HOLE = 2;
const CHUNK_BLOCK_STATUS = 5;
const CHUNK_ERROR_BIT = 0x8000;
/** Longest option reply or structured chunk accepted (a read is at most `maxRead` plus headers). */
const MAX_OPTION_REPLY = 64 * 1024;

/** One extent of a block-status answer: `length` bytes from `offset` with the context's `flags`. */
export interface Extent {
  offset: number;
  length: number;
  flags: number;
}

/** base:allocation flags. */
export const NBD_STATE_HOLE = 1;
export const NBD_STATE_ZERO = 2;
/** qemu:dirty-bitmap:NAME flag: the extent is dirty. */
export const NBD_STATE_DIRTY = 1;

/** Buffers what the socket delivers and hands out exact byte counts. */
class Incoming {
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
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = all.length > n ? [all.subarray(n)] : [];
    this.size -= n;
    return all.subarray(0, n);
  }
}

export interface NbdOptions {
  /** The export's name. */
  exportName: string;
  /** A meta context to negotiate for block status (`base:allocation`, `qemu:dirty-bitmap:NAME`). */
  metaContext?: string;
  /** Milliseconds to connect and finish the handshake. Default 10 s. */
  timeoutMs?: number;
}

export class NbdClient {
  private readonly incoming = new Incoming();
  private cookie = 1n;
  private busy: Promise<unknown> = Promise.resolve();
  /** The export's size in bytes. */
  size = 0;
  /** The negotiated meta context's id (undefined: none). */
  contextId: number | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (d: Buffer) => this.incoming.push(d));
    socket.on("error", (err) => this.incoming.fail(new NbdError(`NBD connection: ${err.message}`, { cause: err })));
    socket.on("close", () => this.incoming.fail(new NbdError("NBD connection closed")));
  }

  static async connect(path: string, o: NbdOptions): Promise<NbdClient> {
    const timeoutMs = o.timeoutMs ?? 10_000;
    const socket = connect(path);
    const client = new NbdClient(socket);
    const timer = setTimeout(() => socket.destroy(new Error(`no NBD handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      await client.handshake(o);
      return client;
    } catch (err) {
      socket.destroy();
      throw err instanceof NbdError ? err : new NbdError(`NBD at ${path}: ${(err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  private async handshake(o: NbdOptions): Promise<void> {
    const hello = await this.incoming.take(18);
    if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT)
      throw new NbdError("the peer is not a newstyle NBD server");
    const flags = hello.readUInt16BE(16);
    if ((flags & FLAG_FIXED_NEWSTYLE) === 0) throw new NbdError("the NBD server does not speak fixed newstyle");
    const noZeroes = (flags & FLAG_NO_ZEROES) !== 0;
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (noZeroes ? FLAG_NO_ZEROES : 0));
    this.socket.write(clientFlags);

    this.option(OPT_STRUCTURED_REPLY, Buffer.alloc(0));
    const sr = await this.optionReply(OPT_STRUCTURED_REPLY);
    if (sr.type !== REP_ACK) throw new NbdError("the NBD server refused structured replies");

    const name = Buffer.from(o.exportName, "utf8");
    if (o.metaContext !== undefined) {
      const query = Buffer.from(o.metaContext, "utf8");
      const body = Buffer.alloc(4 + name.length + 4 + 4 + query.length);
      let at = body.writeUInt32BE(name.length, 0);
      at += name.copy(body, at);
      at = body.writeUInt32BE(1, at);
      at = body.writeUInt32BE(query.length, at);
      query.copy(body, at);
      this.option(OPT_SET_META_CONTEXT, body);
      for (;;) {
        const r = await this.optionReply(OPT_SET_META_CONTEXT);
        if (r.type === REP_ACK) break;
        if (r.type === REP_META_CONTEXT && r.data.length >= 4) this.contextId = r.data.readUInt32BE(0);
      }
      if (this.contextId === undefined)
        throw new NbdError(`the NBD export ${o.exportName} has no meta context ${o.metaContext}`);
    }

    const go = Buffer.alloc(4 + name.length + 2);
    name.copy(go, 4);
    go.writeUInt32BE(name.length, 0);
    go.writeUInt16BE(0, 4 + name.length);
    this.option(OPT_GO, go);
    let sized = false;
    for (;;) {
      const r = await this.optionReply(OPT_GO);
      if (r.type === REP_ACK) break;
      if (r.type === REP_INFO && r.data.length >= 12 && r.data.readUInt16BE(0) === INFO_EXPORT) {
        this.size = Number(r.data.readBigUInt64BE(2));
        sized = true;
      }
    }
    if (!sized) throw new NbdError(`the NBD server did not say how large ${o.exportName} is`);
  }

  private option(opt: number, data: Buffer): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  private async optionReply(opt: number): Promise<{ type: number; data: Buffer }> {
    const h = await this.incoming.take(20);
    if (h.readBigUInt64BE(0) !== REPLY_MAGIC) throw new NbdError("bad NBD option reply magic");
    if (h.readUInt32BE(8) !== opt) throw new NbdError(`NBD option reply for ${h.readUInt32BE(8)}, expected ${opt}`);
    const type = h.readUInt32BE(12);
    const len = h.readUInt32BE(16);
    if (len > MAX_OPTION_REPLY) throw new NbdError(`an NBD option reply of ${len} bytes`);
    const data = len > 0 ? Buffer.from(await this.incoming.take(len)) : Buffer.alloc(0);
    if (type & 0x80000000)
      throw new NbdError(`the NBD server refused option ${opt} (error ${type & 0x7fffffff}): ${data.toString("utf8")}`);
    return { type, data };
  }

  /** Runs `fn` after every earlier request has had its whole answer. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.busy.then(fn, fn);
    this.busy = run.catch(() => undefined);
    return run;
  }

  private request(type: number, offset: number, length: number): bigint {
    const cookie = this.cookie++;
    const r = Buffer.alloc(28);
    r.writeUInt32BE(REQUEST_MAGIC, 0);
    r.writeUInt16BE(0, 4);
    r.writeUInt16BE(type, 6);
    r.writeBigUInt64BE(cookie, 8);
    r.writeBigUInt64BE(BigInt(offset), 16);
    r.writeUInt32BE(length, 24);
    this.socket.write(r);
    return cookie;
  }

  /**
   * Reads every reply chunk of request `cookie` until the one flagged done, calling `chunk` with
   * each one's type and payload. A simple reply (the server's answer to an error) ends it too.
   */
  private async replies(cookie: bigint, maxChunk: number, chunk: (type: number, p: Buffer) => void): Promise<void> {
    for (;;) {
      const magic = (await this.incoming.take(4)).readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        const h = await this.incoming.take(12);
        const error = h.readUInt32BE(0);
        if (h.readBigUInt64BE(4) !== cookie) throw new NbdError("an NBD reply for another request");
        if (error !== 0) throw new NbdError(`the NBD server answered error ${error}`);
        throw new NbdError("a simple NBD reply where a structured one was negotiated");
      }
      if (magic !== STRUCTURED_REPLY_MAGIC) throw new NbdError(`bad NBD reply magic ${magic.toString(16)}`);
      const h = await this.incoming.take(16);
      const flags = h.readUInt16BE(0);
      const type = h.readUInt16BE(2);
      if (h.readBigUInt64BE(4) !== cookie) throw new NbdError("an NBD reply for another request");
      const len = h.readUInt32BE(12);
      if (len > maxChunk) throw new NbdError(`an NBD reply chunk of ${len} bytes`);
      const payload = len > 0 ? await this.incoming.take(len) : Buffer.alloc(0);
      if (type & CHUNK_ERROR_BIT) {
        const code = payload.length >= 4 ? payload.readUInt32BE(0) : -1;
        const msgLen = payload.length >= 6 ? payload.readUInt16BE(4) : 0;
        throw new NbdError(`the NBD server answered error ${code}: ${payload.subarray(6, 6 + msgLen).toString()}`);
      }
      if (type !== CHUNK_NONE) chunk(type, payload);
      if (flags & REPLY_FLAG_DONE) return;
    }
  }

  /** Reads `into.length` bytes from `offset` (holes the server reports come back as zeros). */
  read(offset: number, into: Buffer): Promise<Buffer> {
    return this.serial(async () => {
      const cookie = this.request(CMD_READ, offset, into.length);
      let got = 0;
      await this.replies(cookie, into.length + 16, (type, p) => {
        if (type === CHUNK_OFFSET_DATA) {
          const at = Number(p.readBigUInt64BE(0)) - offset;
          const data = p.subarray(8);
          if (at < 0 || at + data.length > into.length) throw new NbdError("an NBD read chunk outside the request");
          data.copy(into, at);
          got += data.length;
        } else if (type === CHUNK_OFFSET_HOLE) {
          const at = Number(p.readBigUInt64BE(0)) - offset;
          const len = p.readUInt32BE(8);
          if (at < 0 || at + len > into.length) throw new NbdError("an NBD hole chunk outside the request");
          into.fill(0, at, at + len);
          got += len;
        } else throw new NbdError(`an NBD reply chunk of type ${type} to a read`);
      });
      if (got !== into.length) throw new NbdError(`an NBD read returned ${got} of ${into.length} bytes`);
      return into;
    });
  }

  /**
   * The extents of the negotiated meta context from `offset` on, as the server describes them (it
   * may answer for less than `length`; the caller asks again from where the answer ends).
   */
  blockStatus(offset: number, length: number): Promise<Extent[]> {
    const id = this.contextId;
    if (id === undefined) return Promise.reject(new NbdError("no meta context was negotiated"));
    return this.serial(async () => {
      const cookie = this.request(CMD_BLOCK_STATUS, offset, length);
      const out: Extent[] = [];
      await this.replies(cookie, 4 + 8 * 1_000_000, (type, p) => {
        if (type !== CHUNK_BLOCK_STATUS) throw new NbdError(`an NBD reply chunk of type ${type} to block status`);
        if (p.readUInt32BE(0) !== id) return;
        let at = offset;
        for (let i = 4; i + 8 <= p.length; i += 8) {
          const len = p.readUInt32BE(i);
          out.push({ offset: at, length: len, flags: p.readUInt32BE(i + 4) });
          at += len;
        }
      });
      if (out.length === 0) throw new NbdError("an NBD block status with no extent");
      return out;
    });
  }

  /** Every extent of [0, size), asking again where the server stopped short. */
  async extents(maxAsk = 1 << 30): Promise<Extent[]> {
    const all: Extent[] = [];
    let at = 0;
    while (at < this.size) {
      const got = await this.blockStatus(at, Math.min(maxAsk, this.size - at));
      for (const e of got) {
        const length = Math.min(e.length, this.size - e.offset);
        if (length > 0) all.push({ ...e, length });
      }
      const end = got[got.length - 1]!;
      const next = Math.min(this.size, end.offset + end.length);
      if (next <= at) throw new NbdError(`an NBD block status that does not advance past ${at}`);
      at = next;
    }
    return all;
  }

  /** Says goodbye (NBD_CMD_DISC) and closes the socket. */
  async close(): Promise<void> {
    await this.busy;
    if (!this.socket.destroyed) {
      this.request(CMD_DISC, 0, 0);
      await new Promise<void>((r) => this.socket.end(r));
    }
    this.socket.destroy();
  }
}
