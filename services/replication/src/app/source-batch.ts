import { compressChunk, strongHash, zeroPages } from "#native/index.js";
import { AgentReply } from "#schemas/replication.js";
import { DwcpError } from "#common/errors.js";
import { compiledSafeParse } from "../infra/schema-check.js";
import { decodeFrame, encodeFrame, type PutChunk, type Reply, type Request } from "../domain/store/frames.js";
import { PAGE } from "../domain/store/manifest.js";
import type { Transport } from "./destination.js";

const parseReply = compiledSafeParse(AgentReply);

/** The destination refused a chunk or a commit; the snapshot is not committed. */
export class SyncRejectedError extends DwcpError {
  readonly retryable = true;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`destination refused the sync (${code}): ${message}`);
  }
}

export interface SyncCounters {
  /** Bytes of the pages that were sent because they changed (or were unknown to the destination). */
  changedBytes: number;
  /** Framed bytes both ways. */
  wireBytes: number;
  chunksSent: number;
  fullResends: number;
}

/** A transport that counts every byte it carries, both ways. */
export class CountingLink {
  readonly counters: SyncCounters = { changedBytes: 0, wireBytes: 0, chunksSent: 0, fullResends: 0 };
  constructor(private readonly transport: Transport) {}

  async call(req: Request, payload?: Uint8Array): Promise<Reply> {
    // Framed (copied) before the first await: a caller may reuse `payload` once it has the promise.
    const frame = encodeFrame(req, payload);
    const replyFrame = await this.transport.request(frame);
    this.counters.wireBytes += frame.length + replyFrame.length;
    const parsed = parseReply(decodeFrame<Reply>(replyFrame).header);
    if (!parsed.success)
      throw new SyncRejectedError(
        "PROTOCOL",
        `the destination answered with an invalid frame: ${parsed.error.message.slice(0, 200)}`,
      );
    const reply = parsed.data;
    if (reply.kind === "error") throw new SyncRejectedError(reply.code, reply.message);
    return reply;
  }
}

/** One changed chunk to send: its pages are copied into the batch when it is added. */
export interface OutChunk {
  hash: string;
  /** The previous version (null: zeros or nothing). */
  base: string | null;
  /** The chunk's bytes, valid only during `add`. */
  bytes: Buffer;
  /** Pages that changed; null: the whole chunk (the destination knows nothing to build on). */
  pages: number[] | null;
  /** 1 per all-zero page of the chunk (zeroPages). */
  zeroMap: Uint8Array;
  /** Reads the chunk again if the destination asks for it whole. */
  reread: () => Promise<Buffer>;
}

interface Resend {
  chunk: PutChunk;
  reread: OutChunk["reread"];
  reason: string;
}

export interface BatcherOptions {
  /**
   * Payload bytes per "put" before it is sent. Default 1 MiB: small enough that the destination
   * works while the source still reads, and the last request leaves little to wait for.
   */
  batchBytes?: number;
  /** "put" requests awaiting their reply. Default 8. */
  inflight?: number;
}

/**
 * Packs changed pages of many chunks into "put" requests and keeps a few in flight, so a sync
 * with thousands of scattered changes costs a few hundred round trips, not one per chunk. A chunk
 * the destination cannot rebuild (its base is gone, or the result did not verify) is read again
 * and sent whole; if it no longer has the hash it was named by, the volume changed under the sync.
 */
export class PutBatcher {
  private chunks: PutChunk[] = [];
  private rereads: Array<OutChunk["reread"]> = [];
  private buf: Buffer;
  /**
   * Payload buffers whose bytes are already framed, for reuse: a fresh 1 MiB buffer costs ~1 ms
   * of page faults on first touch, more than its copy.
   */
  private readonly spare: Buffer[] = [];
  private used = 0;
  private readonly pending = new Set<Promise<void>>();
  /** Chunks the destination asked for whole, sent by `finish`. */
  private readonly resends: Resend[] = [];
  private failure: Error | undefined;
  private readonly batchBytes: number;
  private readonly inflight: number;

  constructor(
    private readonly link: CountingLink,
    o: BatcherOptions = {},
  ) {
    this.batchBytes = o.batchBytes ?? 1 << 20;
    this.inflight = o.inflight ?? 8;
    this.buf = Buffer.allocUnsafe(this.batchBytes);
  }

  get counters(): SyncCounters {
    return this.link.counters;
  }

  async add(c: OutChunk): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    const pages = c.pages ?? Array.from({ length: Math.ceil(c.bytes.length / PAGE) }, (_, j) => j);
    const zero: number[] = [];
    let bytes = 0;
    for (const j of pages) {
      if (c.zeroMap[j] === 1) zero.push(j);
      else bytes += Math.min(PAGE, c.bytes.length - j * PAGE);
    }
    // Lanes add concurrently: another lane may have filled the buffer while this one awaited a
    // send, so room is checked again after every await, and the copy below runs without one.
    while (this.used > 0 && this.used + bytes > this.buf.length) await this.send();
    if (bytes > this.buf.length) this.buf = Buffer.allocUnsafe(bytes);
    for (const j of pages) {
      if (c.zeroMap[j] === 1) continue;
      const start = j * PAGE;
      this.used += c.bytes.copy(this.buf, this.used, start, Math.min(start + PAGE, c.bytes.length));
    }
    this.link.counters.changedBytes += pages.reduce((n, j) => n + Math.min(PAGE, c.bytes.length - j * PAGE), 0);
    this.link.counters.chunksSent++;
    this.chunks.push({ hash: c.hash, base: c.base, len: c.bytes.length, pages: c.pages, zero, bytes });
    this.rereads.push(c.reread);
    if (this.used >= this.batchBytes) await this.send();
  }

  private async send(): Promise<void> {
    if (this.chunks.length === 0) return;
    const chunks = this.chunks;
    const rereads = this.rereads;
    const full = this.buf;
    const payload = full.subarray(0, this.used);
    this.chunks = [];
    this.rereads = [];
    this.buf = this.spare.pop() ?? Buffer.allocUnsafe(this.batchBytes);
    this.used = 0;
    const packed = await compressChunk(payload);
    const p = this.link
      .call({ kind: "put", version: 1, chunks, codec: packed.codec, rawLength: payload.length }, packed.data)
      .then((reply) => this.settle(reply, chunks, rereads))
      .catch((err: unknown) => void (this.failure ??= err instanceof Error ? err : new Error(String(err))));
    // `call` framed (copied) the payload before its first await: the buffer is free again.
    if (full.length === this.batchBytes) this.spare.push(full);
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
    while (this.pending.size >= this.inflight) await Promise.race(this.pending);
    if (this.failure !== undefined) throw this.failure;
  }

  private settle(reply: Reply, chunks: PutChunk[], rereads: Array<OutChunk["reread"]>): void {
    if (reply.kind !== "put-result" || reply.outcomes.length !== chunks.length)
      throw new SyncRejectedError("PROTOCOL", `unexpected reply ${reply.kind} to put`);
    for (const [i, outcome] of reply.outcomes.entries()) {
      if (outcome === "need-full")
        this.resends.push({ chunk: chunks[i]!, reread: rereads[i]!, reason: reply.reasons?.[i] ?? "" });
    }
  }

  private async resend(r: Resend): Promise<void> {
    this.link.counters.fullResends++;
    const bytes = await r.reread();
    const actual = (await strongHash(bytes)).toString("hex");
    if (actual !== r.chunk.hash) {
      throw new SyncRejectedError(
        "SOURCE_CHANGED",
        `a chunk changed while the volume was read (${r.reason || "resend"}): ` +
          "quiesce or snapshot the volume and sync again",
      );
    }
    await this.add({ hash: r.chunk.hash, base: null, bytes, pages: null, zeroMap: zeroPages(bytes), reread: r.reread });
  }

  /** Sends what is queued and waits for every reply (and every resend they asked for). */
  async finish(): Promise<SyncCounters> {
    for (;;) {
      await this.send();
      await Promise.all(this.pending);
      if (this.failure !== undefined) throw this.failure;
      if (this.resends.length === 0 && this.chunks.length === 0) return this.link.counters;
      for (const r of this.resends.splice(0)) await this.resend(r);
    }
  }
}
