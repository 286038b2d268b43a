import { fingerprintsAsync, isZero, zeroPages } from "#native/index.js";
import { changedPages, chunkCount, chunkLength, PAGE } from "../domain/store/manifest.js";
import { blake3Hex } from "../infra/chunk-store.js";
import type { SourceCache } from "../infra/fp-cache.js";
import type { Extent, NbdClient } from "../infra/nbd-client.js";
import { SyncRejectedError, type CountingLink, type PutBatcher } from "./source-batch.js";
import type { VolumeOut } from "./volume-scan.js";

// One volume of a running VM's point-in-time view: only the chunks the extents name (the dirty
// bitmap's dirty ones, or on a full read every chunk that is not all zeros) are read, fingerprinted
// and hashed; every other chunk keeps the previous snapshot's hash (or is a zero chunk on a full
// read). No pass over the whole volume. Adjacent chunks are read in one request (a run, up to
// RUN_BYTES); runs are read ahead, several on the wire at once, with at most READ_AHEAD_BYTES read
// or being read and not yet stored; each run's chunks are fingerprinted and hashed on the thread
// pool as soon as it is read, and stored in order. The chunks are read over NBD, or from a raw
// disk's image, in which case the chunks the guest overwrote since the point in time are read
// again over NBD once everything is read (see `direct`).

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
  /**
   * The disk's raw image, read directly instead of through QEMU. What the guest overwrote since the
   * point in time (`overwritten`, asked once everything is read: QEMU copies a block into the
   * fleece before the guest's write reaches the image) is read again through NBD.
   */
  direct?: {
    read: (offset: number, into: Buffer) => Promise<Buffer>;
    overwritten: () => Promise<Extent[]>;
  };
}

export interface ViewVolumeOut extends VolumeOut {
  /** Bytes read from the view. */
  readBytes: number;
  /** Read requests (NBD, or the image's when read directly). */
  reads: number;
  /** Chunks read directly that the guest overwrote meanwhile, read again through NBD. */
  reread: number;
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
  const wanted = chunksOf(j.extents, cs, size);
  const runLimit = Math.max(1, Math.floor(RUN_BYTES / cs));
  let readBytes = 0;
  let readWaitMs = 0;
  let digestMs = 0;
  let reads = 0;

  /**
   * Fingerprints (into `fps`) and hashes chunk `i`: started for every chunk of a run as soon as it
   * is read, so the chunks read ahead are digested on the thread pool together, not one by one.
   */
  const sum = async (i: number, bytes: Buffer): Promise<{ f: BigUint64Array; hash: string | null }> => {
    const p0 = (i * cs) / PAGE;
    const p1 = p0 + Math.ceil(bytes.length / PAGE);
    const [f, hash] = await Promise.all([
      fingerprintsAsync(bytes, fps.subarray(p0, p1)),
      isZero(bytes) ? null : blake3Hex(bytes),
    ]);
    return { f, hash };
  };
  /** Records and stores chunk `i`, in order. */
  const digest = async (i: number, bytes: Buffer, f: BigUint64Array, hash: string | null): Promise<void> => {
    chunks[i] = hash;
    if (hash === null) return;
    if (prev === undefined) {
      unknown.push({ i, hash, bytes });
      return;
    }
    const base = i < prev.chunks.length ? (prev.chunks[i] ?? null) : null;
    if (hash === base) return;
    const p0 = (i * cs) / PAGE;
    const p1 = p0 + f.length;
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
  };
  const slice = (run: Buffer, start: number, i: number): Buffer =>
    run.subarray(i * cs - start, i * cs - start + chunkLength(size, cs, i));
  /** Reads the chunks `which` (in order) with `source`, digesting each run while the next ones are read. */
  const readAll = async (which: number[], source: ReadSource): Promise<void> => {
    const runs = runsOf(which, runLimit);
    const sums = new Map<number, ReturnType<typeof sum>>();
    const summed: ReadSource = async (offset, into) => {
      const run = await source(offset, into);
      for (let i = offset / cs; i * cs < offset + run.length; i++) {
        const s = sum(i, slice(run, offset, i));
        s.catch(() => undefined); // awaited in turn below; none goes unhandled
        sums.set(i, s);
      }
      return run;
    };
    const ahead = readAhead(summed, runs, cs, size);
    reads += runs.length;
    for (const [from, to] of runs) {
      const waited = performance.now();
      const { start, data: run } = await ahead.next();
      const got = performance.now();
      readWaitMs += got - waited;
      readBytes += run.length;
      for (let i = from; i < to; i++) {
        const { f, hash } = await sums.get(i)!;
        sums.delete(i);
        await digest(i, slice(run, start, i), f, hash);
      }
      if (unknown.length > 0) await offer(j, unknown.splice(0), reread);
      digestMs += performance.now() - got;
    }
  };

  let again: number[] = [];
  if (j.direct !== undefined) {
    await readAll(wanted, j.direct.read);
    // Chunks whose image blocks the guest overwrote after the point in time: their first read may
    // have seen the new data; the fleece holds the old.
    const read = new Set(wanted);
    again = chunksOf(await j.direct.overwritten(), cs, size).filter((i) => read.has(i));
    if (again.length > 0) await readAll(again, (offset, into) => nbd.read(offset, into));
  } else await readAll(wanted, (offset, into) => nbd.read(offset, into));
  const t = performance.now();
  await j.batcher.finish(); // resends read from the view: before it closes
  const finishMs = performance.now() - t;
  return {
    vol: { name: j.name, sizeBytes: size, chunks },
    fingerprints: fps,
    readBytes,
    reads,
    reread: again.length,
    readWaitMs,
    digestMs,
    finishMs,
  };
}

type ReadSource = (offset: number, into: Buffer) => Promise<Buffer>;

/**
 * Reads `runs` in order, keeping up to READ_AHEAD_BYTES of them on the wire or read and not yet
 * taken (at least one run); `next` hands out the next run's bytes once they are in.
 */
function readAhead(
  source: ReadSource,
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
      const data = source(start, Buffer.allocUnsafe(len));
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
