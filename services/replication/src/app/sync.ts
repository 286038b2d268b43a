import { randomBytes } from "node:crypto";
import { open } from "node:fs/promises";
import { basename } from "node:path";
import { fingerprintsAsync } from "../../../../native/index.js";
import type { SnapshotCommitted } from "../../../../schemas/replication.js";
import { latestSnapshot } from "../domain/replication/state.js";
import { changedPages, chunkCount, chunkLength, DEFAULT_CHUNK_BYTES, PAGE, snapshotIdFor, type Manifest, type ManifestVolume } from "../domain/store/manifest.js";
import { dropCache, loadCache, saveCache, type SourceCache } from "../infra/fp-cache.js";
import type { ReplicationLog } from "../infra/replication-log.js";
import type { Transport } from "./destination.js";
import { CountingLink, sendChunk, SyncRejectedError, type SyncCounters } from "./source-chunk.js";

export interface SyncOptions {
  vm: string;
  /** Volume files on the source, read as they are now (quiesce or snapshot them first). */
  sources: string[];
  sourceHost: string;
  destinationHost: string;
  /** The store's path on the destination host, recorded in the event for restores. */
  storePath: string;
  transport: Transport;
  log: ReplicationLog;
  /** Where the source keeps its fingerprint cache. */
  stateDir: string;
  /** Bytes per stored chunk, a multiple of 4 KiB. Default 1 MiB. */
  chunkSizeBytes?: number;
  /** Chunks in flight per volume. Default 8. */
  concurrency?: number;
}

export interface SyncResult extends SyncCounters {
  snapshotId: string;
  parentId?: string;
  bytes: number;
  seconds: number;
  event: SnapshotCommitted;
}

interface VolumeOut {
  vol: ManifestVolume;
  fingerprints: BigUint64Array;
}

async function pool(n: number, width: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(width, n) }, lane));
}

async function syncVolume(link: CountingLink, path: string, cs: number, prev: SourceCache["volumes"][number] | undefined, width: number): Promise<VolumeOut> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const n = chunkCount(size, cs);
    const totalPages = Math.ceil(size / PAGE);
    const chunks: Array<string | null> = new Array<string | null>(n).fill(null);
    const fps = new BigUint64Array(totalPages);
    const sizeChanged = prev !== undefined && prev.sizeBytes !== size;
    await pool(n, width, async (i) => {
      const len = chunkLength(size, cs, i);
      const buf = Buffer.allocUnsafe(len);
      const { bytesRead } = await fh.read(buf, 0, len, i * cs);
      if (bytesRead !== len) throw new SyncRejectedError("SOURCE_CHANGED", `${path} shrank while it was read`);
      const f = await fingerprintsAsync(buf);
      fps.set(f, (i * cs) / PAGE);
      if (prev === undefined) {
        chunks[i] = await sendChunk(link, buf, [], undefined);
        return;
      }
      const changed = changedPages(f, prev.fingerprints, (i * cs) / PAGE, sizeChanged, totalPages);
      const parent = i < prev.chunks.length ? (prev.chunks[i] ?? null) : null;
      chunks[i] = changed.length === 0 && i < prev.chunks.length ? parent : await sendChunk(link, buf, changed, parent);
    });
    return { vol: { name: basename(path), sizeBytes: size, chunks }, fingerprints: fps };
  } finally {
    await fh.close();
  }
}

/**
 * One incremental sync: reads every volume, sends what changed since the last committed snapshot,
 * has the destination make the manifest durable, then records SnapshotCommitted. Until that
 * append succeeds the previous snapshot stays the latest; chunks already sent are reused.
 */
export async function syncOnce(o: SyncOptions): Promise<SyncResult> {
  const started = Date.now();
  const cs = o.chunkSizeBytes ?? DEFAULT_CHUNK_BYTES;
  const names = o.sources.map((p) => basename(p));
  if (new Set(names).size !== names.length) throw new SyncRejectedError("DUPLICATE_VOLUME", `volume file names must differ: ${names.join(", ")}`);
  const { state, seq } = await o.log.read(o.vm);
  const parent = latestSnapshot(state);
  const cached = await loadCache(o.stateDir, o.vm, parent?.snapshotId);
  const cache = cached?.chunkSizeBytes === cs ? cached : undefined;
  const takenAt = new Date();
  const snapshotId = snapshotIdFor(takenAt, randomBytes(3).toString("hex"));
  const link = new CountingLink(o.transport);
  const outs: VolumeOut[] = [];
  for (const path of o.sources) {
    outs.push(await syncVolume(link, path, cs, cache?.volumes.find((v) => v.name === basename(path)), o.concurrency ?? 8));
  }
  const manifest: Manifest = {
    format: "dwcp-manifest", version: 1, vm: o.vm, snapshotId, ...(parent ? { parentId: parent.snapshotId } : {}),
    takenAt: takenAt.toISOString(), chunkSizeBytes: cs, volumes: outs.map((x) => x.vol),
  };
  const committed = await link.call({ kind: "commit", manifest }).catch(async (err: unknown) => {
    if (err instanceof SyncRejectedError && err.code === "CHUNKS_MISSING") await dropCache(o.stateDir, o.vm);
    throw err;
  });
  if (committed.kind !== "committed") throw new SyncRejectedError("PROTOCOL", `unexpected reply ${committed.kind} to commit`);
  const bytes = outs.reduce((n, x) => n + x.vol.sizeBytes, 0);
  const event: SnapshotCommitted = {
    type: "SnapshotCommitted", version: 1, vm: o.vm, at: new Date().toISOString(), snapshotId,
    ...(parent ? { parentId: parent.snapshotId } : {}), takenAt: takenAt.toISOString(),
    source: { host: o.sourceHost, paths: o.sources }, destination: { host: o.destinationHost, store: o.storePath },
    manifest: committed.manifest, manifestBlake3: committed.blake3,
    volumes: outs.map((x) => ({ name: x.vol.name, sizeBytes: x.vol.sizeBytes, chunkCount: x.vol.chunks.length })),
    bytes, changedBytes: link.counters.changedBytes, wireBytes: link.counters.wireBytes, durationMs: Date.now() - started,
  };
  await o.log.append(o.vm, [event], `snap-${snapshotId}`, seq);
  await saveCache(o.stateDir, o.vm, { snapshotId, chunkSizeBytes: cs, volumes: outs.map((x) => ({ ...x.vol, fingerprints: x.fingerprints })) });
  return { snapshotId, ...(parent ? { parentId: parent.snapshotId } : {}), bytes, seconds: (Date.now() - started) / 1000, event, ...link.counters };
}
