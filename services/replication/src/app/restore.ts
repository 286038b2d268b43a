import { mkdir, open, rename, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { zeroPages } from "../../../../native/index.js";
import { SnapshotNotFoundError, StoreIntegrityError } from "../domain/errors.js";
import { snapshotAt, type Replication, type Snapshot } from "../domain/replication/state.js";
import { chunkLength, manifestProblem, PAGE, type Manifest, type ManifestVolume } from "../domain/store/manifest.js";
import { ChunkStore } from "../infra/chunk-store.js";
import { fsyncDir } from "../infra/durable-file.js";

export interface RestoreOptions {
  vm: string;
  /** The newest snapshot taken at or before this time. */
  at?: string | Date;
  snapshotId?: string;
  /** Directory the volumes are written into, by name (created if missing). */
  toDir: string;
  /** The store directory; default: the one the snapshot's event names. */
  storeDir?: string;
  /** Chunks read, verified and written at once. Default 8. */
  concurrency?: number;
}

export interface RestoreResult {
  snapshotId: string;
  takenAt: string;
  files: Array<{ path: string; sizeBytes: number }>;
  bytes: number;
  seconds: number;
}

export function pickSnapshot(r: Replication, o: { at?: string | Date; snapshotId?: string }): Snapshot {
  if (o.snapshotId !== undefined) {
    const s = r.snapshots.find((x) => x.snapshotId === o.snapshotId);
    if (!s) throw new SnapshotNotFoundError(r.vm, `with id ${o.snapshotId}`);
    return s;
  }
  const at = o.at === undefined ? new Date() : new Date(o.at);
  const s = snapshotAt(r, at.toISOString());
  if (!s) throw new SnapshotNotFoundError(r.vm, `taken at or before ${at.toISOString()}`);
  return s;
}

/** Writes the non-zero pages of a chunk as runs, so zero pages stay holes. */
async function writeSparse(fh: FileHandle, data: Buffer, pos: number): Promise<void> {
  const zp = zeroPages(data);
  let start = -1;
  for (let j = 0; j <= zp.length; j++) {
    const nonZero = j < zp.length && zp[j] !== 1;
    if (nonZero && start < 0) start = j;
    if (!nonZero && start >= 0) {
      const from = start * PAGE;
      const to = Math.min(j * PAGE, data.length);
      await fh.write(data, from, to - from, pos + from);
      start = -1;
    }
  }
}

async function restoreVolume(store: ChunkStore, m: Manifest, v: ManifestVolume, path: string, width: number): Promise<void> {
  const part = `${path}.part`;
  const fh = await open(part, "w", 0o600);
  try {
    await fh.truncate(v.sizeBytes);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < v.chunks.length) {
        const i = next++;
        const hash = v.chunks[i];
        if (hash === null || hash === undefined) continue;
        const data = await store.get(hash);
        const len = chunkLength(v.sizeBytes, m.chunkSizeBytes, i);
        if (data.length !== len) throw new StoreIntegrityError(`chunk ${i} of ${v.name}`, `${len} bytes`, `${data.length} bytes`);
        await writeSparse(fh, data, i * m.chunkSizeBytes);
      }
    };
    await Promise.all(Array.from({ length: width }, lane));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(part, path);
}

/**
 * Writes every volume of a snapshot as it was: the manifest is checked against the BLAKE3 the log
 * committed, each chunk against its name, zero chunks and pages are left as holes; files appear
 * under their final names only once complete and fsynced.
 */
export async function restoreFromStore(snap: Snapshot, o: RestoreOptions): Promise<RestoreResult> {
  const started = Date.now();
  const store = new ChunkStore(o.storeDir ?? snap.destination.store);
  const m = await store.readManifest(snap.manifest, snap.manifestBlake3);
  await mkdir(o.toDir, { recursive: true });
  const files: RestoreResult["files"] = [];
  const problem = manifestProblem(m);
  if (problem) throw new StoreIntegrityError(`manifest ${snap.manifest}`, "a valid manifest", problem);
  for (const v of m.volumes) {
    const path = join(o.toDir, v.name);
    await restoreVolume(store, m, v, path, o.concurrency ?? 8);
    files.push({ path, sizeBytes: v.sizeBytes });
  }
  await fsyncDir(files[0] ? dirname(files[0].path) : o.toDir);
  return { snapshotId: snap.snapshotId, takenAt: snap.takenAt, files, bytes: files.reduce((n, f) => n + f.sizeBytes, 0), seconds: (Date.now() - started) / 1000 };
}
