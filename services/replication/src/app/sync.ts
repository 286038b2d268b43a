import { randomBytes } from "node:crypto";
import { observeSync, observeSyncFailed } from "./sync-metrics.js";
import { basename } from "node:path";
import type { SnapshotCommitted } from "#schemas/replication.js";
import type { SnapshotVmDefinition } from "#schemas/vm.js";
import { snapshotCommitted, type SnapshotRecord } from "../domain/replication/decide.js";
import { errorCode } from "#common/errors.js";
import type { Logger } from "#common/logger.js";
import { latestSnapshot } from "../domain/replication/state.js";
import { DEFAULT_CHUNK_BYTES, snapshotIdFor, volumeChanges, type Manifest } from "../domain/store/manifest.js";
import type { Reply } from "../domain/store/frames.js";
import type { FileHandle } from "node:fs/promises";
import type { DirHandle } from "#native/index.js";
import { dropCache, loadCache, pruneCaches, writeCache, type SourceCache, type StateDir } from "../infra/fp-cache.js";
import type { ReplicationLog } from "../infra/replication-log.js";
import type { Transport } from "./destination.js";
import { CountingLink, PutBatcher, SyncRejectedError, type SyncCounters } from "./source-batch.js";
import { syncVolume, type VolumeOut } from "./volume-scan.js";
import { replicationLogger, type LogOption } from "./logging.js";

export interface SyncOptions extends LogOption {
  vm: string;
  /** Volume files on the source, read as they are now (quiesce or snapshot them first). */
  sources: string[];
  /**
   * Opens source `i` (named `path` in `sources`) for reading; default: by path. The replication
   * service opens each beneath the host root's held fd; the sync then reads only from that handle.
   */
  openSource?: (path: string, i: number) => Promise<FileHandle>;
  sourceHost: string;
  destinationHost: string;
  /** The store's path on the destination host, recorded in the event for restores. */
  storePath: string;
  transport: Transport;
  log: ReplicationLog;
  /** Where the source keeps its fingerprint cache. */
  stateDir: string;
  /** `stateDir` held by fd (the replication service's, beneath its host root): used instead of the path. */
  stateHandle?: DirHandle;
  /** Bytes per stored chunk, a multiple of 4 KiB. Default 1 MiB. */
  chunkSizeBytes?: number;
  /** Blocks of 4 MiB read and fingerprinted at once per volume. Default 3. */
  concurrency?: number;
  /**
   * Reads the volumes some other way than scanning `sources` (which still name them): a running
   * VM's point-in-time view (vm-sync.ts). Called once, after the log is folded.
   */
  readVolumes?: (ctx: VolumeReadContext) => Promise<VolumeOut[]>;
  /** A running VM's definition, recorded with the snapshot so a restore can start it. */
  vmDefinition?: SnapshotVmDefinition;
}

/** What a `readVolumes` reader is given. */
export interface VolumeReadContext {
  snapshotId: string;
  parentId: string | undefined;
  /** The parent snapshot's cache, if this source has it and it has this chunk size. */
  cache: SourceCache | undefined;
  cs: number;
  batcher: PutBatcher;
  link: CountingLink;
}

/**
 * The cache of the last snapshot this process committed, per state dir and VM: a replication
 * loop (`dwcp replicate --every`) then skips reading, hashing and parsing the cache files (~4 MiB
 * of fingerprints and the chunk list per 2 GiB). It is used only when the log still names that
 * snapshot as the latest; the files stay the source of truth for every other process.
 */
const committedCaches = new Map<string, SourceCache>();
const cacheKey = (o: SyncOptions): string => `${o.stateDir}\0${o.vm}`;
const stateOf = (o: SyncOptions): StateDir => o.stateHandle ?? o.stateDir;

async function previousCache(o: SyncOptions, snapshotId: string | undefined): Promise<SourceCache | undefined> {
  const kept = committedCaches.get(cacheKey(o));
  return kept !== undefined && kept.snapshotId === snapshotId ? kept : loadCache(stateOf(o), o.vm, snapshotId);
}

/**
 * Asks the destination to make the manifest durable. When the source knows the parent's chunk
 * list (its cache) only the changed entries travel (2.2 MB of hashes per 2 GiB otherwise); an
 * agent that does not hold that parent (restarted, or it committed another snapshot since) says
 * PARENT_UNKNOWN and gets the whole manifest.
 */
async function commitManifest(link: CountingLink, m: Manifest, parent: SourceCache | undefined): Promise<Reply> {
  const { vm, snapshotId, parentId, takenAt, chunkSizeBytes } = m;
  const volumes =
    parentId !== undefined && parent?.snapshotId === parentId ? volumeChanges(parent.volumes, m.volumes) : undefined;
  if (volumes !== undefined && parentId !== undefined) {
    try {
      return await link.call({
        kind: "commit-changes",
        version: 1,
        vm,
        snapshotId,
        parentId,
        takenAt,
        chunkSizeBytes,
        volumes,
      });
    } catch (err) {
      if (!(err instanceof SyncRejectedError && err.code === "PARENT_UNKNOWN")) throw err;
    }
  }
  return link.call({ kind: "commit", version: 1, manifest: m });
}

/** Where a sync's time went, in milliseconds. */
export interface SyncPhases {
  /** Folding the VM's log and loading the fingerprint cache (from memory after this process's own sync). */
  prepareMs: number;
  /** Reading, fingerprinting, hashing and sending every volume, until the last chunk is stored. */
  volumesMs: number;
  /**
   * The destination checks every chunk, seals its pack and writes the manifest (the new
   * fingerprint cache is written meanwhile).
   */
  commitMs: number;
  /** SnapshotCommitted appended to the log. */
  appendMs: number;
  /** The rest of writing the new fingerprint cache, and older caches deleted. */
  cacheMs: number;
}

export interface SyncResult extends SyncCounters {
  phases: SyncPhases;
  snapshotId: string;
  parentId?: string;
  bytes: number;
  seconds: number;
  event: SnapshotCommitted;
}

/**
 * One incremental sync: reads every volume, sends what changed since the last committed snapshot,
 * has the destination make the manifest durable, then records SnapshotCommitted. Until that
 * append succeeds the previous snapshot stays the latest; chunks already sent are reused.
 */
export async function syncOnce(o: SyncOptions): Promise<SyncResult> {
  const log = replicationLogger(o, { vm: o.vm, host: o.sourceHost });
  try {
    const r = await sync(o, log);
    const { snapshotId, parentId, bytes, changedBytes, wireBytes, seconds } = r;
    log.info({ snapshotId, parentId, bytes, changedBytes, wireBytes, seconds }, "snapshot committed");
    observeSync({ vm: o.vm, takenAt: r.event.takenAt, seconds, changedBytes, wireBytes });
    return r;
  } catch (err) {
    observeSyncFailed();
    log.warn({ err, code: errorCode(err) }, "sync failed; the previous snapshot stays the latest");
    throw err;
  }
}

async function sync(o: SyncOptions, log: Logger): Promise<SyncResult> {
  const started = Date.now();
  const phases: SyncPhases = { prepareMs: 0, volumesMs: 0, commitMs: 0, appendMs: 0, cacheMs: 0 };
  let mark = performance.now();
  const lap = (k: keyof SyncPhases): void => {
    const now = performance.now();
    phases[k] = now - mark;
    mark = now;
  };
  const cs = o.chunkSizeBytes ?? DEFAULT_CHUNK_BYTES;
  const names = o.sources.map((p) => basename(p));
  if (new Set(names).size !== names.length)
    throw new SyncRejectedError("DUPLICATE_VOLUME", `volume file names must differ: ${names.join(", ")}`);
  const { state, seq } = await o.log.read(o.vm);
  const parent = latestSnapshot(state);
  // The cache says which chunks the parent's store holds: only a sync into that same store may
  // skip them (the VM's chain may move to another store, which then receives every chunk).
  const sameStore = parent?.destination.host === o.destinationHost && parent.destination.store === o.storePath;
  const cached = sameStore ? await previousCache(o, parent.snapshotId) : undefined;
  const cache = cached?.chunkSizeBytes === cs ? cached : undefined;
  const takenAt = new Date();
  const snapshotId = snapshotIdFor(takenAt, randomBytes(3).toString("hex"));
  log.info({ snapshotId, parentId: parent?.snapshotId, volumes: names }, "sync started");
  const link = new CountingLink(o.transport);
  const batcher = new PutBatcher(link);
  lap("prepareMs");
  const outs: VolumeOut[] = o.readVolumes
    ? await o.readVolumes({ snapshotId, parentId: parent?.snapshotId, cache, cs, batcher, link })
    : [];
  for (const [i, path] of o.readVolumes ? [] : o.sources.entries()) {
    outs.push(
      await syncVolume({
        batcher,
        link,
        path,
        ...(o.openSource ? { open: () => o.openSource!(path, i) } : {}),
        cs,
        prev: cache?.volumes.find((v) => v.name === basename(path)),
        lanes: o.concurrency ?? 3,
      }),
    );
  }
  lap("volumesMs");
  const manifest: Manifest = {
    format: "dwcp-manifest",
    version: 1,
    vm: o.vm,
    snapshotId,
    ...(parent ? { parentId: parent.snapshotId } : {}),
    takenAt: takenAt.toISOString(),
    chunkSizeBytes: cs,
    volumes: outs.map((x) => x.vol),
  };
  // The new cache is written while the destination commits and the event is appended: it is only
  // ever loaded for the snapshot the log names as the latest, so until the append holds it is an
  // unused file, which the next successful sync prunes. Older caches go only once the append held.
  const next: SourceCache = {
    snapshotId,
    chunkSizeBytes: cs,
    volumes: outs.map((x) => ({ ...x.vol, fingerprints: x.fingerprints })),
  };
  const caching = writeCache(stateOf(o), o.vm, next);
  caching.catch(() => undefined); // awaited below; keeps an early failure from being unhandled
  const committed = await commitManifest(link, manifest, cache).catch(async (err: unknown) => {
    if (err instanceof SyncRejectedError && err.code === "CHUNKS_MISSING") {
      committedCaches.delete(cacheKey(o));
      await caching.catch(() => undefined);
      await dropCache(stateOf(o), o.vm);
    }
    throw err;
  });
  if (committed.kind !== "committed")
    throw new SyncRejectedError("PROTOCOL", `unexpected reply ${committed.kind} to commit`);
  lap("commitMs");
  const bytes = outs.reduce((n, x) => n + x.vol.sizeBytes, 0);
  const snapshot: SnapshotRecord = {
    snapshotId,
    ...(parent ? { parentId: parent.snapshotId } : {}),
    takenAt: takenAt.toISOString(),
    source: { host: o.sourceHost, paths: o.sources },
    destination: { host: o.destinationHost, store: o.storePath },
    manifest: committed.manifest,
    manifestBlake3: committed.blake3,
    volumes: outs.map((x) => ({ name: x.vol.name, sizeBytes: x.vol.sizeBytes, chunkCount: x.vol.chunks.length })),
    bytes,
    changedBytes: link.counters.changedBytes,
    wireBytes: link.counters.wireBytes,
    durationMs: Date.now() - started,
    ...(o.vmDefinition ? { vmDefinition: o.vmDefinition } : {}),
  };
  const now = new Date();
  const recorded = await o.log.handle(o.vm, { type: "CommitSnapshot", snapshot }, `snap-${snapshotId}`, {
    now,
    known: { state, seq },
  });
  const event =
    recorded.events.find((e): e is SnapshotCommitted => e.type === "SnapshotCommitted") ??
    snapshotCommitted(o.vm, now, snapshot);
  committedCaches.set(cacheKey(o), next);
  lap("appendMs");
  await caching;
  await pruneCaches(stateOf(o), o.vm, snapshotId);
  lap("cacheMs");
  return {
    snapshotId,
    ...(parent ? { parentId: parent.snapshotId } : {}),
    bytes,
    seconds: (Date.now() - started) / 1000,
    event,
    phases,
    ...link.counters,
  };
}
