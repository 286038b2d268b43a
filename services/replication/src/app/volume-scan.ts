import { open, type FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import { fingerprintsAsync, isZero, zeroCopy, zeroPages } from "#native/index.js";
import { changedPages, chunkCount, chunkLength, PAGE, type ManifestVolume } from "../domain/store/manifest.js";
import { blake3Hex } from "../infra/chunk-store.js";
import type { SourceCache } from "../infra/fp-cache.js";
import { SyncRejectedError, type CountingLink, type PutBatcher } from "./source-batch.js";

/** Bytes read per call: several chunks, so reads and fingerprinting run in large pieces. */
const BLOCK_BYTES = 4 << 20;

/**
 * Read buffers kept between syncs (at most one per lane, BLOCK_BYTES each): a replication loop
 * syncs every few minutes, and a fresh 4 MiB buffer costs ~4 ms of page faults on first touch.
 */
const idleBlocks: Buffer[] = [];

/** The bytes of one fingerprint array as a Buffer (for memcmp of page ranges). */
const fpBytes = (f: BigUint64Array): Buffer => Buffer.from(f.buffer, f.byteOffset, f.byteLength);

export interface VolumeOut {
  vol: ManifestVolume;
  fingerprints: BigUint64Array;
}

export interface VolumeJob {
  batcher: PutBatcher;
  link: CountingLink;
  path: string;
  /** Opens the volume (default: `path`, by path); it is opened once and every read uses that handle. */
  open?: () => Promise<FileHandle>;
  /** Bytes per chunk. */
  cs: number;
  /** What the last committed snapshot knew of this volume (undefined: nothing). */
  prev: SourceCache["volumes"][number] | undefined;
  /** Blocks read and fingerprinted at once. */
  lanes: number;
}

async function readExactly(fh: FileHandle, buf: Buffer, pos: number, path: string): Promise<Buffer> {
  const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
  if (bytesRead !== buf.length) throw new SyncRejectedError("SOURCE_CHANGED", `${path} shrank while it was read`);
  return buf;
}

/**
 * One volume of a sync: read in blocks on several lanes, each block fingerprinted on the libuv
 * pool; a chunk whose fingerprints all match the last snapshot's (one memcmp) keeps its hash
 * without being hashed; every other non-zero chunk is hashed and handed to the batcher with its
 * changed pages, or, when nothing is known about it, offered to the destination's dedup first.
 */
class VolumeScan {
  readonly chunks: Array<string | null>;
  readonly fps: BigUint64Array;
  private readonly totalPages: number;
  private readonly sizeChanged: boolean;
  /** From this page on, a size change makes pages count as changed (see changedPages). */
  private readonly edge: number;
  private readonly newFp: Buffer;
  private readonly oldFp: Buffer | undefined;
  /** Blocks are fingerprinted through a mapping and only chunks that changed are read (mappedBlock). */
  private readonly mapped: boolean;

  constructor(
    private readonly j: VolumeJob,
    private readonly fh: FileHandle,
    readonly size: number,
  ) {
    this.chunks = new Array<string | null>(chunkCount(size, j.cs)).fill(null);
    this.totalPages = Math.ceil(size / PAGE);
    this.fps = new BigUint64Array(this.totalPages);
    this.sizeChanged = j.prev !== undefined && j.prev.sizeBytes !== size;
    const oldPages = j.prev?.fingerprints.length ?? 0;
    this.edge = this.sizeChanged ? Math.min(oldPages, this.totalPages) - 1 : Infinity;
    this.newFp = fpBytes(this.fps);
    this.oldFp = j.prev ? fpBytes(j.prev.fingerprints) : undefined;
    this.mapped = zeroCopy.available && j.prev !== undefined;
  }

  async run(): Promise<void> {
    const block = Math.max(this.j.cs, Math.floor(BLOCK_BYTES / this.j.cs) * this.j.cs);
    const blocks = Math.ceil(this.size / block);
    let next = 0;
    const lanes = Math.min(this.j.lanes, blocks);
    const lane = async (): Promise<void> => {
      const kept = block === BLOCK_BYTES ? idleBlocks.pop() : undefined;
      const buf = kept ?? Buffer.allocUnsafe(Math.min(block, this.size));
      try {
        while (next < blocks) {
          const pos = next++ * block;
          const view = buf.subarray(0, Math.min(block, this.size - pos));
          if (this.mapped) await this.mappedBlock(pos, view);
          else await this.block(pos, await readExactly(this.fh, view, pos, this.j.path));
        }
      } finally {
        if (buf.length === BLOCK_BYTES && idleBlocks.length < lanes) idleBlocks.push(buf);
      }
    };
    await Promise.all(Array.from({ length: lanes }, lane));
  }

  /** Whether chunk i's pages [p0, p1) have the fingerprints of the last snapshot. */
  private unchanged(i: number, p0: number, p1: number): boolean {
    const prev = this.j.prev;
    if (!prev || !this.oldFp || i >= prev.chunks.length || p1 > prev.fingerprints.length || p1 > this.edge)
      return false;
    return this.newFp.compare(this.oldFp, p0 * 8, p1 * 8, p0 * 8, p1 * 8) === 0;
  }

  /**
   * A block of a volume that was synced before: its fingerprints come from a mapping of the file
   * (zeroCopy.fingerprintFile), and only the runs of chunks whose fingerprints differ from the
   * last snapshot's are read into `buf` and go through `block`, which fingerprints them again
   * from the bytes it hashes. On a 2 GiB image with 1% of its pages changed that reads 15% of
   * the file instead of all of it.
   */
  private async mappedBlock(pos: number, buf: Buffer): Promise<void> {
    const { cs, prev, path } = this.j;
    const p0 = pos / PAGE;
    try {
      await zeroCopy.fingerprintFile(
        this.fh.fd,
        pos,
        buf.length,
        this.fps.subarray(p0, p0 + Math.ceil(buf.length / PAGE)),
      );
    } catch (err) {
      if ((err as { sysCode?: string }).sysCode === "ENXIO")
        throw new SyncRejectedError("SOURCE_CHANGED", `${path} shrank while it was read`);
      throw err;
    }
    const end = pos + buf.length;
    let first = -1; // the first chunk of the run of changed chunks being collected
    for (let i = pos / cs; ; i++) {
      const at = i * cs;
      const changed =
        at < end && !this.unchanged(i, at / PAGE, at / PAGE + Math.ceil(chunkLength(this.size, cs, i) / PAGE));
      if (changed) {
        if (first < 0) first = i;
        continue;
      }
      if (first >= 0) {
        const from = first * cs;
        const run = buf.subarray(0, Math.min(at, end) - from);
        await this.block(
          from,
          zeroCopy.readIfCached(this.fh.fd, run, from, run.length) ? run : await readExactly(this.fh, run, from, path),
        );
        first = -1;
      }
      if (at >= end) return;
      this.chunks[i] = prev?.chunks[i] ?? null;
    }
  }

  private reread(i: number, len: number): () => Promise<Buffer> {
    return () => readExactly(this.fh, Buffer.allocUnsafe(len), i * this.j.cs, this.j.path);
  }

  private async block(pos: number, view: Buffer): Promise<void> {
    const { cs, prev } = this.j;
    const f = await fingerprintsAsync(view, this.fps.subarray(pos / PAGE, pos / PAGE + Math.ceil(view.length / PAGE)));
    const unknown: Array<{ i: number; hash: string; bytes: Buffer }> = [];
    for (let i = pos / cs; i * cs < pos + view.length; i++) {
      const bytes = view.subarray(i * cs - pos, i * cs - pos + chunkLength(this.size, cs, i));
      const p0 = (i * cs) / PAGE;
      const p1 = p0 + Math.ceil(bytes.length / PAGE);
      if (this.unchanged(i, p0, p1)) {
        this.chunks[i] = prev?.chunks[i] ?? null;
        continue;
      }
      if (isZero(bytes)) continue;
      const hash = await blake3Hex(bytes);
      this.chunks[i] = hash;
      if (!prev) {
        unknown.push({ i, hash, bytes });
        continue;
      }
      const base = i < prev.chunks.length ? (prev.chunks[i] ?? null) : null;
      if (hash === base) continue;
      const changed = changedPages(
        f.subarray(p0 - pos / PAGE, p1 - pos / PAGE),
        prev.fingerprints,
        p0,
        this.sizeChanged,
        this.totalPages,
      );
      const whole = base === null && changed.length === p1 - p0;
      await this.j.batcher.add({
        hash,
        base,
        bytes,
        pages: whole ? null : changed,
        zeroMap: zeroPages(bytes),
        reread: this.reread(i, bytes.length),
      });
    }
    if (unknown.length > 0) await this.offer(unknown);
  }

  /** Chunks nothing is known about: asks which the store holds (dedup across VMs and versions), sends the rest. */
  private async offer(unknown: Array<{ i: number; hash: string; bytes: Buffer }>): Promise<void> {
    const r = await this.j.link.call({ kind: "have", version: 1, hashes: unknown.map((u) => u.hash) });
    if (r.kind !== "have-result" || r.have.length !== unknown.length)
      throw new SyncRejectedError("PROTOCOL", `unexpected reply ${r.kind} to have`);
    for (const [k, u] of unknown.entries()) {
      if (r.have[k] === true) continue;
      await this.j.batcher.add({
        hash: u.hash,
        base: null,
        bytes: u.bytes,
        pages: null,
        zeroMap: zeroPages(u.bytes),
        reread: this.reread(u.i, u.bytes.length),
      });
    }
  }
}

/** Syncs one volume; the batcher has stored every chunk the manifest will name when it returns. */
export async function syncVolume(j: VolumeJob): Promise<VolumeOut> {
  const fh = j.open ? await j.open() : await open(j.path, "r");
  try {
    const st = await fh.stat();
    const scan = new VolumeScan(j, fh, st.size);
    await scan.run();
    await j.batcher.finish(); // resends read from fh: before it closes
    const ownership = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    return {
      vol: { name: basename(j.path), sizeBytes: scan.size, chunks: scan.chunks, ...ownership },
      fingerprints: scan.fps,
    };
  } finally {
    await fh.close();
  }
}
