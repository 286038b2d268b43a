import { compressChunk } from "../../../../native/compress.js";
import { isZero, zeroPages } from "../../../../native/index.js";
import { DwcpError } from "../../../common/errors.js";
import { decodeFrame, encodeFrame, type Reply, type Request } from "../domain/store/frames.js";
import { PAGE } from "../domain/store/manifest.js";
import { blake3Hex } from "../infra/chunk-store.js";
import type { Transport } from "./destination.js";

/** The destination refused a chunk or a commit; the snapshot is not committed. */
export class SyncRejectedError extends DwcpError {
  readonly retryable = true;
  constructor(readonly code: string, message: string) {
    super(`destination refused the sync (${code}): ${message}`);
  }
}

export interface SyncCounters {
  changedBytes: number;
  wireBytes: number;
  chunksSent: number;
  fullResends: number;
}

/** A transport that counts every byte it carries, both ways. */
export class CountingLink {
  readonly counters: SyncCounters = { changedBytes: 0, wireBytes: 0, chunksSent: 0, fullResends: 0 };
  constructor(private readonly transport: Transport) {}

  async call(req: Request, payload?: Uint8Array): Promise<Reply> {
    const frame = encodeFrame(req, payload);
    const replyFrame = await this.transport.request(frame);
    this.counters.wireBytes += frame.length + replyFrame.length;
    const reply = decodeFrame<Reply>(replyFrame).header;
    if (reply.kind === "error") throw new SyncRejectedError(reply.code, reply.message);
    return reply;
  }
}

const pageBytes = (len: number, j: number): number => Math.min(PAGE, len - j * PAGE);

/**
 * Sends one chunk that changed (or that nothing is known about) and returns its manifest entry.
 * `base` is the previous version's hash (null: it was zeros or did not exist; undefined: unknown,
 * ask the destination first). Only the listed pages travel, zero pages as flags; a rebuild the
 * destination cannot verify is answered by sending the whole chunk.
 */
export async function sendChunk(link: CountingLink, buf: Buffer, changed: number[], base: string | null | undefined): Promise<string | null> {
  if (isZero(buf)) return null;
  const hash = await blake3Hex(buf);
  if (hash === base) return hash;
  let pages = changed;
  if (base === undefined) {
    const r = await link.call({ kind: "have", hashes: [hash] });
    if (r.kind === "have-result" && r.have[0] === true) return hash;
    pages = Array.from({ length: Math.ceil(buf.length / PAGE) }, (_, j) => j);
  }
  const zp = zeroPages(buf);
  const zero = pages.filter((j) => zp[j] === 1);
  const data = Buffer.concat(pages.filter((j) => zp[j] !== 1).map((j) => buf.subarray(j * PAGE, j * PAGE + pageBytes(buf.length, j))));
  const packed = await compressChunk(data);
  link.counters.changedBytes += pages.reduce((n, j) => n + pageBytes(buf.length, j), 0);
  link.counters.chunksSent++;
  const reply = await link.call(
    { kind: "pages", hash, base: base ?? null, len: buf.length, pages, zero, codec: packed.codec, rawLength: data.length },
    packed.data,
  );
  if (reply.kind === "need-full") {
    link.counters.fullResends++;
    const whole = await compressChunk(buf);
    await link.call({ kind: "full", hash, len: buf.length, codec: whole.codec }, whole.data);
  }
  return hash;
}
