import { connect, type Socket } from "node:net";
import { DwcpError } from "#common/errors.js";
import {
  NBDMAGIC,
  IHAVEOPT,
  REPLY_MAGIC,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  OPT_GO,
  OPT_STRUCTURED_REPLY,
  OPT_SET_META_CONTEXT,
  REP_ACK,
  REP_INFO,
  REP_META_CONTEXT,
  INFO_EXPORT,
  FLAG_SEND_DF,
  CMD_FLAG_DF,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  CMD_READ,
  CMD_DISC,
  CMD_BLOCK_STATUS,
  REPLY_FLAG_DONE,
  CHUNK_NONE,
  CHUNK_OFFSET_DATA,
  CHUNK_OFFSET_HOLE,
  CHUNK_BLOCK_STATUS,
  CHUNK_ERROR_BIT,
  MAX_OPTION_REPLY,
  Incoming,
} from "./nbd-wire.js";

// A small read-only NBD client (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md)
// for QEMU's NBD server on a unix socket: fixed newstyle handshake, structured replies, one meta
// context, NBD_CMD_READ and NBD_CMD_BLOCK_STATUS, several requests in flight at once (their
// cookies match the replies, whose chunks may interleave).

/** The NBD server refused something, sent something malformed, or the connection failed. */
export class NbdError extends DwcpError {
  readonly code = "NBD_ERROR";
  readonly retryable = true;
}

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

export interface NbdOptions {
  /** The export's name. */
  exportName: string;
  /** A meta context to negotiate for block status (`base:allocation`, `qemu:dirty-bitmap:NAME`). */
  metaContext?: string;
  /** Milliseconds to connect and finish the handshake. Default 10 s. */
  timeoutMs?: number;
  /**
   * Milliseconds a request may wait for its whole answer before the connection is given up (every
   * request still waiting fails). Default 30 s.
   */
  requestTimeoutMs?: number;
  /** Requests on the wire at once; more wait their turn. Default 16. */
  maxInflight?: number;
}

/** A request on the wire, waiting for the reply chunk flagged done. */
interface Pending {
  /** Longest reply chunk it accepts. */
  maxChunk: number;
  /** Takes one chunk of its reply (throwing NbdError on a malformed one). */
  chunk: (type: number, payload: Buffer) => void;
  /** The whole reply arrived (the chunk flagged done). */
  done: () => void;
  reject: (err: Error) => void;
  /** An error chunk: the request fails once its reply is done. */
  error?: NbdError;
  timer: NodeJS.Timeout;
}

/** Longest read: QEMU's NBD server refuses requests over 32 MiB. */
export const NBD_MAX_READ = 32 << 20;
/** Longest block-status request (its length is 32 bits), a multiple of any sensible granularity. */
const MAX_STATUS_ASK = 0x1_0000_0000 - (1 << 20);
/** Longest block-status chunk accepted: QEMU sends at most 128 Ki extents per request. */
const MAX_STATUS_CHUNK = 4 + 8 * (1 << 20);

/**
 * A read-only NBD client with many requests in flight: each request has its own cookie, one loop
 * reads every reply and hands each chunk to the request its cookie names, so replies may come in
 * any order and interleave. Every chunk is bounds-checked against its request; anything
 * malformed, and a request unanswered for `requestTimeoutMs`, fails the connection and every
 * request on it with NbdError.
 */
export class NbdClient {
  private readonly incoming = new Incoming();
  private cookie = 1n;
  private readonly inflight = new Map<bigint, Pending>();
  /** Requests waiting for a free slot (at most `maxInflight` on the wire). */
  private readonly queued: Array<() => void> = [];
  /** Requests between asking for a slot and being on the wire. */
  private waitingForSlot = 0;
  /** `close` waiting for the requests to end. */
  private idle: Array<() => void> = [];
  private failed: NbdError | undefined;
  private readonly requestTimeoutMs: number;
  private readonly maxInflight: number;
  /** The most requests that were on the wire at once. */
  peakInflight = 0;
  /** The export's size in bytes. */
  size = 0;
  /** The negotiated meta context's id (undefined: none). */
  contextId: number | undefined;
  private transmissionFlags = 0;

  private constructor(
    private readonly socket: Socket,
    o: NbdOptions,
  ) {
    this.requestTimeoutMs = o.requestTimeoutMs ?? 30_000;
    this.maxInflight = Math.max(1, o.maxInflight ?? 16);
    socket.on("data", (d: Buffer) => this.incoming.push(d));
    socket.on("error", (err) => this.fail(new NbdError(`NBD connection: ${err.message}`, { cause: err })));
    socket.on("close", () => this.fail(new NbdError("NBD connection closed")));
  }

  static async connect(path: string, o: NbdOptions): Promise<NbdClient> {
    const timeoutMs = o.timeoutMs ?? 10_000;
    const socket = connect(path);
    const client = new NbdClient(socket, o);
    const timer = setTimeout(() => socket.destroy(new Error(`no NBD handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      await client.handshake(o);
    } catch (err) {
      socket.destroy();
      throw err instanceof NbdError ? err : new NbdError(`NBD at ${path}: ${(err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    void client.pump();
    return client;
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
        const size = r.data.readBigUInt64BE(2);
        if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdError(`an NBD export of ${size} bytes`);
        this.size = Number(size);
        this.transmissionFlags = r.data.readUInt16BE(10);
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

  /** Fails the connection: every request waiting or queued rejects, the socket is destroyed. */
  private fail(err: NbdError): void {
    if (this.failed) return;
    this.failed = err;
    this.incoming.fail(err);
    for (const p of this.inflight.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.inflight.clear();
    for (const wake of [...this.queued.splice(0), ...this.idle.splice(0)]) wake();
    this.socket.destroy();
  }

  /** Reads replies until the connection ends, handing each chunk to its request. */
  private async pump(): Promise<void> {
    try {
      for (;;) await this.reply();
    } catch (err) {
      this.fail(err instanceof NbdError ? err : new NbdError(`NBD reply: ${(err as Error).message}`, { cause: err }));
    }
  }

  private pending(cookie: bigint): Pending {
    const p = this.inflight.get(cookie);
    if (p === undefined) throw new NbdError(`an NBD reply for cookie ${cookie}, which no request waits for`);
    return p;
  }

  private finish(cookie: bigint, p: Pending, err?: Error): void {
    clearTimeout(p.timer);
    this.inflight.delete(cookie);
    this.queued.shift()?.();
    if (err) p.reject(err);
    else p.done();
    for (const wake of this.idle.splice(0)) wake();
  }

  private async reply(): Promise<void> {
    const magic = (await this.incoming.take(4)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      // Only an error may come as a simple reply once structured replies are negotiated: a
      // successful one would carry read data of a length the stream does not say.
      const h = await this.incoming.take(12);
      const error = h.readUInt32BE(0);
      const cookie = h.readBigUInt64BE(4);
      const p = this.pending(cookie);
      if (error === 0) throw new NbdError("a simple NBD reply where a structured one was negotiated");
      this.finish(cookie, p, new NbdError(`the NBD server answered error ${error}`));
      return;
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new NbdError(`bad NBD reply magic ${magic.toString(16)}`);
    const h = await this.incoming.take(16);
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    const cookie = h.readBigUInt64BE(4);
    const len = h.readUInt32BE(12);
    const p = this.pending(cookie);
    if (len > p.maxChunk) throw new NbdError(`an NBD reply chunk of ${len} bytes`);
    const payload = len > 0 ? await this.incoming.take(len) : Buffer.alloc(0);
    if (type & CHUNK_ERROR_BIT) {
      if (payload.length < 6) throw new NbdError(`an NBD error chunk of ${payload.length} bytes`);
      const code = payload.readUInt32BE(0);
      const msgLen = payload.readUInt16BE(4);
      if (6 + msgLen > payload.length) throw new NbdError("an NBD error chunk whose message overruns it");
      p.error ??= new NbdError(`the NBD server answered error ${code}: ${payload.subarray(6, 6 + msgLen).toString()}`);
    } else if (type === CHUNK_NONE) {
      if (len !== 0 || (flags & REPLY_FLAG_DONE) === 0) throw new NbdError("a malformed NBD_REPLY_TYPE_NONE chunk");
    } else if (p.error === undefined) p.chunk(type, payload);
    if (flags & REPLY_FLAG_DONE) this.finish(cookie, p, p.error);
  }

  /**
   * Sends a request once a slot is free and resolves when its reply is done. `chunk` takes each
   * chunk of the reply; it throws NbdError for one that does not fit the request.
   */
  private async send(
    type: number,
    flags: number,
    offset: number,
    length: number,
    maxChunk: number,
    chunk: Pending["chunk"],
  ): Promise<void> {
    this.waitingForSlot++;
    try {
      while (this.failed === undefined && this.inflight.size >= this.maxInflight)
        await new Promise<void>((r) => this.queued.push(r));
    } finally {
      this.waitingForSlot--;
    }
    if (this.failed) throw this.failed;
    const cookie = this.cookie++;
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => this.fail(new NbdError(`no NBD reply within ${this.requestTimeoutMs} ms`)),
        this.requestTimeoutMs,
      );
      this.inflight.set(cookie, { maxChunk, chunk, done: resolve, reject, timer });
    });
    this.peakInflight = Math.max(this.peakInflight, this.inflight.size);
    const r = Buffer.alloc(28);
    r.writeUInt32BE(REQUEST_MAGIC, 0);
    r.writeUInt16BE(flags, 4);
    r.writeUInt16BE(type, 6);
    r.writeBigUInt64BE(cookie, 8);
    r.writeBigUInt64BE(BigInt(offset), 16);
    r.writeUInt32BE(length, 24);
    this.socket.write(r);
    return done;
  }

  /**
   * Reads `into.length` bytes (at most NBD_MAX_READ) from `offset` (holes the server reports come
   * back as zeros). Many reads may be in flight; each resolves when its own reply is whole.
   */
  async read(offset: number, into: Buffer): Promise<Buffer> {
    const length = into.length;
    if (
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      length < 1 ||
      length > NBD_MAX_READ ||
      offset + length > this.size
    )
      throw new NbdError(`an NBD read of ${length} bytes at ${offset} outside the export's ${this.size} bytes`);
    // Where each chunk landed: at the end they must tile the request exactly, so no byte of
    // `into` is left as it was (it may be uninitialised) or written twice.
    const spans: Array<[number, number]> = [];
    const place = (p: Buffer, hole: boolean): [number, number] => {
      if (p.length < (hole ? 12 : 9) || (hole && p.length !== 12))
        throw new NbdError(`a malformed NBD ${hole ? "hole" : "data"} chunk of ${p.length} bytes`);
      const at = Number(p.readBigUInt64BE(0)) - offset;
      const len = hole ? p.readUInt32BE(8) : p.length - 8;
      if (at < 0 || len < 1 || at + len > length) throw new NbdError("an NBD read chunk outside the request");
      spans.push([at, at + len]);
      return [at, at + len];
    };
    const df = (this.transmissionFlags & FLAG_SEND_DF) !== 0 ? CMD_FLAG_DF : 0;
    await this.send(CMD_READ, df, offset, length, length + 8, (type, p) => {
      if (type === CHUNK_OFFSET_DATA) {
        const [at] = place(p, false);
        p.copy(into, at, 8);
      } else if (type === CHUNK_OFFSET_HOLE) {
        const [at, end] = place(p, true);
        into.fill(0, at, end);
      } else throw new NbdError(`an NBD reply chunk of type ${type} to a read`);
    });
    spans.sort((a, b) => a[0] - b[0]);
    let covered = 0;
    for (const [at, end] of spans) {
      if (at !== covered)
        throw new NbdError(
          `an NBD read whose chunks ${at < covered ? "overlap" : "leave a gap"} at ${offset + Math.min(at, covered)}`,
        );
      covered = end;
    }
    if (covered !== length) throw new NbdError(`an NBD read returned ${covered} of ${length} bytes`);
    return into;
  }

  /**
   * The extents of the negotiated meta context from `offset` on, as the server describes them (it
   * may answer for less than `length`; the caller asks again from where the answer ends).
   */
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const id = this.contextId;
    if (id === undefined) throw new NbdError("no meta context was negotiated");
    if (
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      length < 1 ||
      length > 0xffff_ffff ||
      offset + length > this.size
    )
      throw new NbdError(`an NBD block status of ${length} bytes at ${offset} outside the export's ${this.size} bytes`);
    let out: Extent[] | undefined;
    await this.send(CMD_BLOCK_STATUS, 0, offset, length, MAX_STATUS_CHUNK, (type, p) => {
      if (type !== CHUNK_BLOCK_STATUS) throw new NbdError(`an NBD reply chunk of type ${type} to block status`);
      if (p.length < 12 || (p.length - 4) % 8 !== 0)
        throw new NbdError(`an NBD block status chunk of ${p.length} bytes`);
      if (p.readUInt32BE(0) !== id)
        throw new NbdError(`an NBD block status for meta context ${p.readUInt32BE(0)}, not ${id}`);
      if (out !== undefined) throw new NbdError("two NBD block status chunks for one meta context");
      out = [];
      let at = offset;
      for (let i = 4; i + 8 <= p.length; i += 8) {
        const len = p.readUInt32BE(i);
        if (len === 0) throw new NbdError("an NBD block status extent of 0 bytes");
        out.push({ offset: at, length: len, flags: p.readUInt32BE(i + 4) });
        at += len;
      }
    });
    if (out === undefined) throw new NbdError("an NBD block status with no extent");
    return out;
  }

  /**
   * Every extent of [0, size): asks for the whole export at once (in 4 GiB requests, all in
   * flight), then again from wherever the server stopped short.
   */
  async extents(maxAsk = MAX_STATUS_ASK): Promise<Extent[]> {
    const ask = Math.max(1, Math.min(maxAsk, MAX_STATUS_ASK));
    const answers = new Map<number, Extent[]>();
    const todo: number[] = [];
    for (let at = 0; at < this.size; at += ask) todo.push(at);
    while (todo.length > 0) {
      const starts = todo.splice(0);
      const got = await Promise.all(starts.map((at) => this.blockStatus(at, Math.min(ask, this.size - at))));
      for (const [k, at] of starts.entries()) {
        const es = got[k]!;
        answers.set(at, es);
        const end = Math.min(at + ask, this.size);
        const last = es[es.length - 1]!;
        const next = last.offset + last.length;
        if (next < end) todo.push(next); // short answer: ask again for the rest of the request
      }
    }
    const all: Extent[] = [];
    for (const at of [...answers.keys()].sort((a, b) => a - b))
      for (const e of answers.get(at)!) {
        const from = Math.max(e.offset, all.length > 0 ? all[all.length - 1]!.offset + all[all.length - 1]!.length : 0);
        const length = Math.min(e.offset + e.length, this.size) - from;
        if (length > 0) all.push({ offset: from, length, flags: e.flags });
      }
    return all;
  }

  /** Waits for every request on the wire, says goodbye (NBD_CMD_DISC) and closes the socket. */
  async close(): Promise<void> {
    while (this.failed === undefined && this.inflight.size + this.waitingForSlot > 0)
      await new Promise<void>((r) => this.idle.push(r));
    if (this.failed === undefined && !this.socket.destroyed) {
      this.failed = new NbdError("the NBD connection is closed");
      const r = Buffer.alloc(28);
      r.writeUInt32BE(REQUEST_MAGIC, 0);
      r.writeUInt16BE(CMD_DISC, 6);
      r.writeBigUInt64BE(this.cookie++, 8);
      await new Promise<void>((done) => this.socket.end(r, done));
    }
    this.socket.destroy();
  }
}
