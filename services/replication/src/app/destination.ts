import { decompressChunk } from "../../../../native/compress.js";
import { Id } from "../../../../schemas/common.js";
import { manifestProblem, MAX_CHUNK_BYTES, type Manifest } from "../domain/store/manifest.js";
import { applyDelta, MAX_DELTA_DEPTH } from "../domain/store/delta.js";
import { decodeFrame, encodeFrame, type Reply, type Request } from "../domain/store/frames.js";
import { blake3Hex, ChunkStore } from "../infra/chunk-store.js";

/** Replies to the source's requests against one store. Runs next to the destination's files. */
export class DestinationAgent {
  constructor(readonly store: ChunkStore) {}

  static async open(storeDir: string): Promise<DestinationAgent> {
    return new DestinationAgent(await ChunkStore.open(storeDir));
  }

  async handle(frame: Buffer): Promise<Buffer> {
    let reply: Reply;
    try {
      const { header, payload } = decodeFrame<Request>(frame);
      reply = await this.dispatch(header, payload);
    } catch (err) {
      reply = { kind: "error", code: (err as { code?: string }).code ?? "INTERNAL", message: (err as Error).message };
    }
    return encodeFrame(reply);
  }

  private async dispatch(req: Request, payload: Buffer): Promise<Reply> {
    if ((req.kind === "pages" || req.kind === "full") && !(Number.isInteger(req.len) && req.len > 0 && req.len <= MAX_CHUNK_BYTES)) {
      return { kind: "error", code: "FRAME_INVALID", message: `chunk length ${req.len} is not in 1..${MAX_CHUNK_BYTES}` };
    }
    switch (req.kind) {
      case "have":
        return { kind: "have-result", have: await Promise.all(req.hashes.map((h) => this.store.has(h))) };
      case "pages":
        return this.rebuild(req, payload);
      case "full":
        return this.full(req, payload);
      case "commit":
        return this.commit(req.manifest);
      default: {
        const never: never = req;
        return never;
      }
    }
  }

  private async rebuild(req: Extract<Request, { kind: "pages" }>, payload: Buffer): Promise<Reply> {
    // Changed pages almost always make a new chunk: ask the disk only via "have" (first syncs).
    if (this.store.knows(req.hash)) return { kind: "stored", dedup: true };
    const base = req.base === null ? undefined : await this.store.resolve(req.base).catch(() => undefined);
    if (req.base !== null && !base) return { kind: "need-full", reason: "base chunk missing" };
    const raw = await decompressChunk({ codec: req.codec, data: payload, rawLength: req.rawLength });
    const zero = new Set(req.zero);
    const delta = { len: req.len, pages: req.pages, zero: req.pages.map((j) => zero.has(j)), data: raw };
    const chunk = applyDelta(base?.data, delta);
    if (!chunk) return { kind: "need-full", reason: "pages do not fit the chunk" };
    if ((await blake3Hex(chunk)) !== req.hash) return { kind: "need-full", reason: "rebuilt chunk does not match its BLAKE3" };
    // Keep only the changed pages when there is a base and the chain stays short.
    if (req.base !== null && base && base.depth < MAX_DELTA_DEPTH) await this.store.putDelta(req.hash, { ...delta, base: req.base, depth: base.depth + 1 });
    else await this.store.put(req.hash, chunk);
    return { kind: "stored", dedup: false };
  }

  private async full(req: Extract<Request, { kind: "full" }>, payload: Buffer): Promise<Reply> {
    const raw = await decompressChunk({ codec: req.codec, data: payload, rawLength: req.len });
    const actual = await blake3Hex(raw);
    if (raw.length !== req.len || actual !== req.hash) {
      return { kind: "error", code: "CHECKSUM_MISMATCH", message: `chunk ${req.hash} arrived as ${actual}` };
    }
    await this.store.put(req.hash, raw);
    return { kind: "stored", dedup: false };
  }

  private async commit(m: Manifest): Promise<Reply> {
    const problem = !Id.safeParse(m.vm).success || !Id.safeParse(m.snapshotId).success ? "vm and snapshotId must be ids" : manifestProblem(m);
    if (problem) return { kind: "error", code: "MANIFEST_INVALID", message: problem };
    const hashes = new Set(m.volumes.flatMap((v) => v.chunks.filter((h): h is string => h !== null)));
    const present = await Promise.all([...hashes].map(async (h) => ((await this.store.has(h)) ? undefined : h)));
    const missing = present.filter((h) => h !== undefined);
    if (missing.length > 0) return { kind: "error", code: "CHUNKS_MISSING", message: `${missing.length} chunk(s) missing, e.g. ${missing[0]}` };
    await this.store.flush();
    const { rel, blake3 } = await this.store.writeManifest(m);
    return { kind: "committed", manifest: rel, blake3 };
  }
}

/** How the source reaches a destination agent: in-process here, a socket in a deployment. */
export interface Transport {
  request(frame: Buffer): Promise<Buffer>;
  close?(): Promise<void>;
}

export const inProcess = (agent: DestinationAgent): Transport => ({ request: (f) => agent.handle(f) });
