import { fingerprintsAsync, isZero, zeroPages } from "#native/index.js";
import { changedPages, chunkCount, chunkLength, PAGE } from "../domain/store/manifest.js";
import { blake3Hex } from "../infra/chunk-store.js";
import type { SourceCache } from "../infra/fp-cache.js";
import type { Extent, NbdClient } from "../infra/nbd-client.js";
import { SyncRejectedError, type CountingLink, type PutBatcher } from "./source-batch.js";
import type { VolumeOut } from "./volume-scan.js";

// One volume of a running VM's point-in-time view, read over NBD: only the chunks the extents
// name (the dirty bitmap's dirty ones, or on a full read every chunk that is not all zeros) are
// read, fingerprinted and hashed; every other chunk keeps the previous snapshot's hash (or is a
// zero chunk on a full read). No pass over the whole volume. Adjacent chunks are read in one
// request (a run, up to RUN_BYTES); runs are read ahead, several on the wire at once, while the
// runs already read are fingerprinted, hashed and stored, with at most READ_AHEAD_BYTES read or
// being read and not yet stored.

/** Longest read: adjacent chunks are read in one request up to this many bytes. */
const RUN_BYTES = 4 << 20;
/** Bytes of runs read or being read ahead of the one being fingerprinted and stored. */
const READ_AHEAD_BYTES = 16 << 20;

export interface ViewVolumeJob {
  nbd: NbdClient;
  /** The volume's name in the manifest. */
  name: string;
  batcher: PutBatcher;
  link: CountingLink;
  cs: number;
  /**
   * The previous snapshot's record of this volume, when the extents are changes since it (an
   * incremental read); undefined on a full read.
   */
  since: SourceCache["volumes"][number] | undefined;
  /** The previous snapshot's record, used only as page-delta bases on a full read. */
  bases: SourceCache["volumes"][number] | undefined;
  /** What to read: dirty extents, or on a full read the extents that are not known zeros. */
  extents: Extent[];
}

export interface ViewVolumeOut extends VolumeOut {
  /** Bytes read from the view. */
  readBytes: number;
  /** NBD read requests. */
  reads: number;
  /** Milliseconds spent waiting for a run's data once everything read before it was stored. */
  readWaitMs: number;
  /** Milliseconds fingerprinting, hashing and storing (handing to the batcher) what was read. */
  digestMs: number;
  /** Milliseconds until the batcher's last reply (`finish`). */
  finishMs: number;
}

/** Chunk indices that any extent overlaps, in order. */
export function chunksOf(extents: Extent[], cs: number, size: number): number[] {
  const out: number[] = [];
  let last = -1;
  for (const e of extents) {
    if (e.length <= 0) continue;
    const first = Math.max(last + 1, Math.floor(e.offset / cs));
    const end = Math.min(chunkCount(size, cs), Math.ceil((e.offset + e.length) / cs));
    for (let i = first; i < end; i++) out.push(i);
    if (end - 1 > last) last = end - 1;
  }
  return out;
}

/** Runs of consecutive chunk indices, each at most `maxChunks` long. */
function runsOf(chunks: number[], maxChunks: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (const i of chunks) {
    const r = runs[runs.length - 1];
    if (r && r[1] === i && r[1] - r[0] < maxChunks) r[1] = i + 1;
    else runs.push([i, i + 1]);
  }
  return runs;
}

export async function readViewVolume(j: ViewVolumeJob): Promise<ViewVolumeOut> {
  const { nbd, cs } = j;
  const size = nbd.size;
  const totalPages = Math.ceil(size / PAGE);
  const fps = new BigUint64Array(totalPages);
  let chunks: Array<string | null>;
  if (j.since !== undefined) {
    if (j.since.sizeBytes !== size || j.since.fingerprints.length !== totalPages)
      throw new SyncRejectedError("SOURCE_CHANGED", `${j.name} changed size since the previous snapshot`);
    chunks = [...j.since.chunks];
    fps.set(j.since.fingerprints);
  } else {
    chunks = new Array<string | null>(chunkCount(size, cs)).fill(null);
    fps.fill((await fingerprintsAsync(Buffer.alloc(PAGE)))[0]!);
  }
  const prev = j.since ?? (j.bases?.sizeBytes === size ? j.bases : undefined);
  const unknown: Array<{ i: number; hash: string; bytes: Buffer }> = [];
  const reread = (i: number, len: number) => (): Promise<Buffer> => nbd.read(i * cs, Buffer.allocUnsafe(len));
  const runs = runsOf(chunksOf(j.extents, cs, size), Math.max(1, Math.floor(RUN_BYTES / cs)));
  const ahead = readAhead(nbd, runs, cs, size);
  let readBytes = 0;
  let readWaitMs = 0;
  let digestMs = 0;

  for (const [from, to] of runs) {
    const waited = performance.now();
    const { start, data: run } = await ahead.next();
    const got = performance.now();
    readWaitMs += got - waited;
    readBytes += run.length;
    for (let i = from; i < to; i++) {
      const bytes = run.subarray(i * cs - start, i * cs - start + chunkLength(size, cs, i));
      const p0 = (i * cs) / PAGE;
      const p1 = p0 + Math.ceil(bytes.length / PAGE);
      if (isZero(bytes)) {
        await fingerprintsAsync(bytes, fps.subarray(p0, p1));
        chunks[i] = null;
        continue;
      }
      const [f, hash] = await Promise.all([fingerprintsAsync(bytes, fps.subarray(p0, p1)), blake3Hex(bytes)]);
      chunks[i] = hash;
      if (prev === undefined) {
        unknown.push({ i, hash, bytes });
        continue;
      }
      const base = i < prev.chunks.length ? (prev.chunks[i] ?? null) : null;
      if (hash === base) continue;
      const changed = changedPages(f, prev.fingerprints, p0, false, totalPages);
      const whole = base === null && changed.length === p1 - p0;
      await j.batcher.add({
        hash,
        base,
        bytes,
        pages: whole ? null : changed,
        zeroMap: zeroPages(bytes),
        reread: reread(i, bytes.length),
      });
    }
    if (unknown.length > 0) await offer(j, unknown.splice(0), reread);
    digestMs += performance.now() - got;
  }
  const t = performance.now();
  await j.batcher.finish(); // resends read from the view: before it closes
  const finishMs = performance.now() - t;
  return {
    vol: { name: j.name, sizeBytes: size, chunks },
    fingerprints: fps,
    readBytes,
    reads: runs.length,
    readWaitMs,
    digestMs,
    finishMs,
  };
}

/**
 * Reads `runs` in order, keeping up to READ_AHEAD_BYTES of them on the wire or read and not yet
 * taken (at least one run); `next` hands out the next run's bytes once they are in.
 */
function readAhead(
  nbd: NbdClient,
  runs: Array<[number, number]>,
  cs: number,
  size: number,
): { next: () => Promise<{ start: number; data: Buffer }> } {
  const queue: Array<{ start: number; data: Promise<Buffer> }> = [];
  let issued = 0;
  let aheadBytes = 0;
  const fill = (): void => {
    while (issued < runs.length) {
      const [from, to] = runs[issued]!;
      const start = from * cs;
      const len = Math.min(size, to * cs) - start;
      if (queue.length > 0 && aheadBytes + len > READ_AHEAD_BYTES) return;
      const data = nbd.read(start, Buffer.allocUnsafe(len));
      data.catch(() => undefined); // rejected reads are awaited in turn by `next`; none goes unhandled
      queue.push({ start, data });
      aheadBytes += len;
      issued++;
    }
  };
  return {
    next: async () => {
      fill();
      const r = queue.shift();
      if (r === undefined) throw new Error("readAhead: no run left");
      const data = await r.data;
      aheadBytes -= data.length;
      fill();
      return { start: r.start, data };
    },
  };
}

/** Chunks nothing is known about: asks which the store holds (dedup), sends the rest whole. */
async function offer(
  j: ViewVolumeJob,
  unknown: Array<{ i: number; hash: string; bytes: Buffer }>,
  reread: (i: number, len: number) => () => Promise<Buffer>,
): Promise<void> {
  const r = await j.link.call({ kind: "have", version: 1, hashes: unknown.map((u) => u.hash) });
  if (r.kind !== "have-result" || r.have.length !== unknown.length)
    throw new SyncRejectedError("PROTOCOL", `unexpected reply ${r.kind} to have`);
  for (const [k, u] of unknown.entries()) {
    if (r.have[k] === true) continue;
    await j.batcher.add({
      hash: u.hash,
      base: null,
      bytes: u.bytes,
      pages: null,
      zeroMap: zeroPages(u.bytes),
      reread: reread(u.i, u.bytes.length),
    });
  }
}
