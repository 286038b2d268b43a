import {
  decompressChunk,
  isZero,
  pageChainingValue,
  pageTreePages,
  rootFromChainingValues,
  strongHashPages,
  zeroPages,
} from "#native/index.js";
import type { DirHandle } from "#native/index.js";
import { AgentRequest } from "#schemas/replication.js";
import { silentLogger, type Logger } from "#common/logger.js";
import { AgentStoreError, ChunkChecksumError, FrameInvalidError } from "../domain/errors.js";
import { applyChanges, manifestProblem, PAGE, type Manifest } from "../domain/store/manifest.js";
import { applyPages, cvBytes, deltaRebuilds, mergePages, pageSetOf, stackPages } from "../domain/store/pack.js";
import {
  decodeFrame,
  encodeFrame,
  type PutChunk,
  type PutOutcome,
  type Reply,
  type Request,
} from "../domain/store/frames.js";
import { blake3Hex, ChunkStore, scratchFor, type Resolved, type Scratch } from "../infra/chunk-store.js";
import { compiledSafeParse } from "../infra/schema-check.js";

/** Per lane: buffers for the base's records and the rebuilt chunk. */
type LaneBuffers = Scratch & { rebuilt: Buffer };

/** Chunk bytes of lane buffers kept for reuse (each lane holds four buffers of that size). */
const SPARE_BYTES = 16 << 20;

/** Chunks of one "put" rebuilt and verified at once (reads, hashing). */
const PUT_LANES = 8;

const ZERO_PAGE = new Uint8Array(PAGE);

const all = (len: number): number[] => Array.from({ length: Math.ceil(len / PAGE) }, (_, j) => j);

/** Requests are validated once, here, against the schema (compiled fast path, see schema-check.ts). */
const parseRequest = compiledSafeParse(AgentRequest);

/** Replies to the source's requests against one store. Runs next to the destination's files. */
export class DestinationAgent {
  /** Lane buffers of finished requests, reused: allocating them per request fed the GC. */
  private readonly spare: LaneBuffers[] = [];
  /** The last manifest this agent made durable, per VM: the parent a "commit-changes" names. */
  private readonly committed = new Map<string, Manifest>();
  /** Changed chunks checked from their keyframe's page chaining values, and rebuilt from their base's data. */
  readonly counters = { fromChainingValues: 0, rebuilt: 0 };
  private readonly log: Logger;
  constructor(
    readonly store: ChunkStore,
    log: Logger = silentLogger,
  ) {
    this.log = log.child({ store: store.dir });
  }

  private takeBuffers(len: number): LaneBuffers {
    const i = this.spare.findIndex((b) => b.rebuilt.length >= len);
    if (i >= 0) return this.spare.splice(i, 1)[0]!;
    return { ...scratchFor(len), rebuilt: Buffer.allocUnsafe(len) };
  }

  /** The agent of the store in `storeDir`; `log` (default silent) gets its commits and refusals. */
  static async open(storeDir: string, log?: Logger): Promise<DestinationAgent> {
    return new DestinationAgent(await ChunkStore.open(storeDir), log);
  }

  /** The agent of the store in the held directory `storeDir` (made if empty; the caller keeps `storeDir`). */
  static async openIn(storeDir: DirHandle, log?: Logger): Promise<DestinationAgent> {
    return new DestinationAgent(await ChunkStore.openIn(storeDir), log);
  }

  async handle(frame: Buffer): Promise<Buffer> {
    return answerFrame(frame, this.log, (req, payload) => this.reply(req, payload));
  }

  /** The reply to one validated request against this agent's store. */
  async reply(req: Request, payload: Buffer): Promise<Reply> {
    switch (req.kind) {
      case "open":
        // Only a listening agent (AgentStores) holds several stores; this one is bound to its own.
        return { kind: "error", version: 1, code: "STORE_FIXED", message: `this agent serves ${this.store.dir} only` };
      case "have":
        return { kind: "have-result", version: 1, have: await Promise.all(req.hashes.map((h) => this.store.has(h))) };
      case "put":
        return this.put(req, payload);
      case "commit":
        return this.commit(req.manifest);
      case "commit-changes":
        return this.commitChanges(req);
      default: {
        const never: never = req;
        return never;
      }
    }
  }

  private async put(req: Extract<Request, { kind: "put" }>, payload: Buffer): Promise<Reply> {
    const out = await decompressChunk({ codec: req.codec, data: payload, rawLength: req.rawLength });
    const raw = Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    const offsets: number[] = [];
    let off = 0;
    for (const c of req.chunks) {
      offsets.push(off);
      off += c.bytes;
    }
    if (off !== raw.length)
      throw new FrameInvalidError(`chunks use ${off} payload bytes, the frame carries ${raw.length}`);
    const outcomes = new Array<PutOutcome>(req.chunks.length);
    const reasons = new Array<string>(req.chunks.length).fill("");
    let next = 0;
    const maxLen = req.chunks.reduce((m, c) => Math.max(m, c.len), 0);
    const lane = async (): Promise<void> => {
      const work = this.takeBuffers(maxLen);
      try {
        while (next < req.chunks.length) {
          const i = next++;
          const c = req.chunks[i]!;
          const r = await this.one(c, raw.subarray(offsets[i], offsets[i]! + c.bytes), work);
          outcomes[i] = r.outcome;
          reasons[i] = r.reason ?? "";
        }
      } finally {
        if (this.spare.reduce((n, b) => n + b.rebuilt.length, 0) < SPARE_BYTES) this.spare.push(work);
      }
    };
    // Each lane holds four chunk-sized buffers: fewer lanes for big chunks.
    const lanes = Math.max(1, Math.min(PUT_LANES, req.chunks.length, Math.floor(SPARE_BYTES / maxLen)));
    await Promise.all(Array.from({ length: lanes }, lane));
    return { kind: "put-result", version: 1, outcomes, ...(reasons.some(Boolean) ? { reasons } : {}) };
  }

  /** Rebuilds one chunk, checks its BLAKE3 and stores it, as a delta against a keyframe when that pays. */
  private async one(c: PutChunk, data: Buffer, work: LaneBuffers): Promise<{ outcome: PutOutcome; reason?: string }> {
    if (this.store.knows(c.hash)) return { outcome: "dedup" };
    if (await this.fromChainingValues(c, data)) {
      this.counters.fromChainingValues++;
      return { outcome: "stored" };
    }
    if (c.base !== null) this.counters.rebuilt++;
    const base: Resolved | undefined =
      c.base === null ? undefined : await this.store.resolve(c.base, work).catch(() => undefined);
    if (c.base !== null && !base) return { outcome: "need-full", reason: "base chunk missing" };
    const pages = c.pages ?? all(c.len);
    const zero = new Set(c.zero);
    const chunk = applyPages(
      base?.data,
      { len: c.len, pages, zero: pages.map((j) => zero.has(j)), data },
      work.rebuilt,
    );
    const whole = c.base === null && c.pages === null;
    if (!chunk)
      return whole
        ? fail(c, "pages that do not fit the chunk")
        : { outcome: "need-full", reason: "pages do not fit the chunk" };
    // A chunk that may become a keyframe keeps its pages' chaining values (same cost as the hash).
    const cvs = pageTreePages(chunk.length) === undefined ? undefined : Buffer.allocUnsafe(cvBytes(chunk.length));
    const actual = cvs ? strongHashPages(chunk, cvs).toString("hex") : await blake3Hex(chunk);
    if (actual !== c.hash)
      return whole ? fail(c, actual) : { outcome: "need-full", reason: "rebuilt chunk does not match its BLAKE3" };
    await this.store_(c.hash, chunk, pages, base, c.base, cvs);
    return { outcome: "stored" };
  }

  /**
   * Checks and stores a changed chunk from its base's keyframe's page chaining values: the hash of
   * the new version is the root over the keyframe's values with the pages of the base's delta and
   * the changed pages hashed anew, so the keyframe's data is neither read nor hashed. False when
   * that does not apply (no stored values, a size without a page tree, a delta over half the
   * chunk, a hash that does not match): `one` then rebuilds and hashes the chunk.
   */
  private async fromChainingValues(c: PutChunk, data: Buffer): Promise<boolean> {
    const pages = pageTreePages(c.len);
    if (c.base === null || c.pages === null || pages === undefined) return false;
    const base = await this.store.keyframeCvs(c.base, c.len).catch(() => undefined);
    if (!base) return false;
    const zero = new Set(c.zero);
    const newer = { pages: c.pages, zero: c.pages.map((j) => zero.has(j)), data };
    const stacked = stackPages(c.len, base.older, newer);
    if (!stacked || stacked.length * 2 > pages) return false;
    const cvs = base.cvs;
    for (const p of stacked) cvs.set(pageChainingValue(p.bytes ?? ZERO_PAGE, p.j), 32 * p.j);
    if (rootFromChainingValues(cvs).toString("hex") !== c.hash) return false;
    // has() touches the keyframe's pack: retention's grace period then covers it until the commit.
    if (this.store.deltaBase(base.key) !== undefined || !(await this.store.has(base.key))) return false;
    await this.store.putDelta(c.hash, { base: base.key, len: c.len, ...pageSetOf(stacked) });
    return true;
  }

  /**
   * A chunk rebuilt from a stored base keeps only the pages that differ from the base's keyframe,
   * while they are at most half the chunk; otherwise it becomes a keyframe itself (with its page
   * chaining values, when it has them). The delta is checked to rebuild the verified chunk before
   * it is stored.
   */
  private async store_(
    hash: string,
    chunk: Buffer,
    changed: number[],
    base: Resolved | undefined,
    baseHash: string | null,
    cvs: Buffer | undefined,
  ): Promise<void> {
    if (base && baseHash !== null) {
      const key = base.keyframe ?? { hash: baseHash, data: base.data, pages: [] };
      const zp = zeroPages(chunk);
      const d = mergePages(
        chunk,
        key.pages.filter((j) => j * PAGE < chunk.length),
        changed,
        (j) => zp[j] === 1,
      );
      // has() touches the keyframe's pack: retention's grace period then covers it until the commit.
      if (
        d.pages.length * 2 <= zp.length &&
        this.store.deltaBase(key.hash) === undefined &&
        (await this.store.has(key.hash))
      ) {
        if (deltaRebuilds(key.data, chunk, d.pages, isZero))
          return this.store.putDelta(hash, { base: key.hash, len: chunk.length, ...d });
      }
    }
    return this.store.putWhole(hash, chunk, cvs);
  }

  private async commitChanges(req: Extract<Request, { kind: "commit-changes" }>): Promise<Reply> {
    const parent = this.committed.get(req.vm);
    if (parent?.snapshotId !== req.parentId || parent.chunkSizeBytes !== req.chunkSizeBytes) {
      return {
        kind: "error",
        version: 1,
        code: "PARENT_UNKNOWN",
        message: `snapshot ${req.parentId} of ${req.vm} is not the last one this agent committed`,
      };
    }
    const volumes = applyChanges(parent.volumes, req.chunkSizeBytes, req.volumes);
    if (typeof volumes === "string") return { kind: "error", version: 1, code: "MANIFEST_INVALID", message: volumes };
    const { vm, snapshotId, parentId, takenAt, chunkSizeBytes } = req;
    return this.commit({
      format: "dwcp-manifest",
      version: 1,
      vm,
      snapshotId,
      parentId,
      takenAt,
      chunkSizeBytes,
      volumes,
    });
  }

  private async commit(m: Manifest): Promise<Reply> {
    const problem = manifestProblem(m);
    if (problem) return { kind: "error", version: 1, code: "MANIFEST_INVALID", message: problem };
    const hashes = new Set(m.volumes.flatMap((v) => v.chunks.filter((h): h is string => h !== null)));
    const missing: string[] = [];
    // Most are known from memory (written or touched moments ago); only the rest ask the disk.
    for (const h of hashes) if (!this.store.knows(h) && !(await this.store.has(h))) missing.push(h);
    if (missing.length > 0)
      return {
        kind: "error",
        version: 1,
        code: "CHUNKS_MISSING",
        message: `${missing.length} chunk(s) missing, e.g. ${missing[0]}`,
      };
    // Both made durable before the reply: only then may the source append SnapshotCommitted. A
    // crash in between leaves a manifest no event names, which retention removes.
    const [, { rel, blake3 }] = await Promise.all([this.store.flush(), this.store.writeManifest(m)]);
    this.committed.set(m.vm, m);
    this.log.info({ vm: m.vm, snapshotId: m.snapshotId, parentId: m.parentId, manifest: rel }, "snapshot stored");
    return { kind: "committed", version: 1, manifest: rel, blake3 };
  }
}

function fail(c: PutChunk, actual: string): never {
  throw new ChunkChecksumError(c.hash, actual);
}

/**
 * Decodes and validates one request frame, answers it with `reply`, and frames the answer; a
 * refusal or failure becomes an "error" reply (logged), never a thrown error.
 */
export async function answerFrame(
  frame: Buffer,
  log: Logger,
  reply: (req: Request, payload: Buffer) => Promise<Reply>,
): Promise<Buffer> {
  let out: Reply;
  try {
    const { header, payload } = decodeFrame<Request>(frame);
    const req = parseRequest(header);
    out = req.success
      ? await reply(req.data, payload)
      : { kind: "error", version: 1, code: "FRAME_INVALID", message: req.error.message.slice(0, 300) };
  } catch (err) {
    out = {
      kind: "error",
      version: 1,
      code: (err as { code?: string }).code ?? "INTERNAL",
      message: (err as Error).message,
    };
    log.warn({ err, code: out.code }, "request failed");
    return encodeFrame(out);
  }
  // PARENT_UNKNOWN is routine (the source then sends the whole manifest).
  if (out.kind === "error" && out.code !== "PARENT_UNKNOWN")
    log.warn({ code: out.code, reason: out.message }, "request refused");
  return encodeFrame(out);
}

/** How the source reaches a destination agent: in-process here, a socket in a deployment. */
export interface Transport {
  request(frame: Buffer): Promise<Buffer>;
  close?(): Promise<void>;
  /** The store's path on the destination's host, as its agent reported it (a snapshot records it). */
  store?: string;
}

/**
 * Points the link's requests at the agent's store beneath `dir` (relative to the agent's root, ""
 * for the root) and returns that store's path on the agent's host.
 */
export async function openAgentStore(link: Transport, dir: string, where: string): Promise<string> {
  const { header } = decodeFrame<Reply>(await link.request(encodeFrame({ kind: "open", version: 1, dir })));
  if (header.kind === "opened") return header.store;
  if (header.kind === "error" && header.code === "FRAME_INVALID")
    throw new AgentStoreError(
      `the agent at ${where} refused to open the store beneath "${dir}" (${header.message}); ` +
        "an agent older than this dwcp takes no store directory: upgrade it",
    );
  const why = header.kind === "error" ? `${header.code}: ${header.message}` : `a "${header.kind}" reply`;
  throw new AgentStoreError(`the agent at ${where} did not open the store beneath "${dir}" (${why})`);
}

export const inProcess = (agent: DestinationAgent): Transport => ({ request: (f) => agent.handle(f) });
