import type { FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import { readAll } from "#common/fs.js";
import {
  blockNodes,
  clearFleeceLeftovers,
  openFleeceView,
  QmpClient,
  removeBitmap,
  restoreBitmap,
  SourceReadError,
  type DirtyBitmap,
  type FleeceDisk,
} from "#mover";
import { NbdClient, NBD_STATE_DIRTY, NBD_STATE_ZERO, type Extent } from "../infra/nbd-client.js";
import type { SourceCache } from "../infra/fp-cache.js";
import { replicationLogger } from "./logging.js";
import { syncOnce, type SyncOptions, type SyncResult, type VolumeReadContext } from "./sync.js";
import { readViewVolume } from "./view-volume.js";
import type { VolumeOut } from "./volume-scan.js";

// Crash-consistent snapshots of a running VM: each sync takes a point-in-time view of all its
// disks at once (QEMU copy-before-write fleecing, one QMP transaction) and reads it over NBD.
// A dirty bitmap per disk, named after the snapshot it started at (`dwcp-<snapshotId>`), records
// what the guest writes after it; the next sync reads only the chunks the bitmap of the log's
// latest snapshot marks dirty. Anything less than certain (no bitmap of that name, one that is not
// recording or is inconsistent after a QEMU crash, no source cache of that snapshot, a disk that
// changed size) makes that disk a full read: never a wrong incremental.

/** A disk of the VM as its definition names it. */
export interface VmSyncDisk {
  /** QEMU's node name of the disk's format node (the definition's disk id). */
  node: string;
  /** The image path under the host root; its base name names the volume in the manifest. */
  path: string;
  format: "raw" | "qcow2";
  /**
   * Opens the image itself for reading, beneath the held host root (no symlink followed). A raw
   * image given one is read directly from it, QEMU only saying what changed and what the guest
   * overwrote since the point in time.
   */
  openImage?: () => Promise<FileHandle>;
}

export interface VmSyncOptions extends Omit<SyncOptions, "sources" | "openSource" | "readVolumes"> {
  /** The disks' paths as the event records them (default: `disks[].path`), in the order of `disks`. */
  sources?: string[];
  /** QEMU's QMP socket. */
  qmp: string;
  /** The VM's run directory: the fleece overlays and the NBD socket are made there. */
  runDir: string;
  disks: VmSyncDisk[];
  /** Bytes per dirty-bitmap bit, a power of two. Default 64 KiB. */
  granularityBytes?: number;
}

/** How one disk of a VM sync was read. */
export interface VmDiskRead {
  name: string;
  mode: "incremental" | "full";
  /** Why a full read, when it was. */
  reason?: string;
  /** Bytes read from the point-in-time view. */
  readBytes: number;
  sizeBytes: number;
}

/** Where a VM sync's reading went, in milliseconds (within the sync's `volumesMs`, except `bitmapMs`). */
export interface VmSyncPhases {
  /** Querying the disks' nodes and bitmaps, dropping stale bitmaps. */
  planMs: number;
  /** Taking the point in time: fleeces, the transaction, the NBD server and its exports. */
  viewMs: number;
  /** NBD connections and handshakes. */
  connectMs: number;
  /** Block-status queries (the dirty bitmap or the allocation map). */
  extentsMs: number;
  /** Reading, fingerprinting, hashing and storing the extents' chunks. */
  readMs: number;
  /** Of `readMs`: waiting for NBD data once everything read before it was handed on. */
  readWaitMs: number;
  /** Of `readMs`: fingerprinting, hashing and handing chunks to the batcher (which may wait for the destination). */
  digestMs: number;
  /** Of `readMs`: waiting for the destination to answer the last batches. */
  finishMs: number;
  /** Stopping the exports, the backup jobs and removing the fleeces. */
  closeMs: number;
  /** Removing the previous snapshot's bitmaps once the snapshot is committed. */
  bitmapMs: number;
}

export interface VmSyncResult extends SyncResult {
  disks: VmDiskRead[];
  /** Bytes read from the view, every disk. */
  readBytes: number;
  vmPhases: VmSyncPhases;
}

const bitmapName = (snapshotId: string): string => `dwcp-${snapshotId}`;
const OURS = /^dwcp-/;

/** Whether `since` can stand for the changes since the parent snapshot, or why not. */
function usable(bm: DirtyBitmap | undefined, prev: SourceCache["volumes"][number] | undefined, size: number): string {
  if (bm === undefined) return "no dirty bitmap of the previous snapshot";
  if (bm.inconsistent === true) return "the dirty bitmap is inconsistent (QEMU stopped uncleanly)";
  if (!bm.recording) return "the dirty bitmap stopped recording (an interrupted sync)";
  if (bm.busy) return "the dirty bitmap is in use";
  if (prev === undefined) return "no source cache of the previous snapshot";
  if (prev.sizeBytes !== size) return "the disk changed size";
  return "";
}

/** One crash-consistent sync of a running VM. */
export async function syncVmOnce(o: VmSyncOptions): Promise<VmSyncResult> {
  const log = replicationLogger(o, { vm: o.vm, host: o.sourceHost });
  const qmp = await QmpClient.connect(o.qmp);
  const reads: VmDiskRead[] = [];
  const vmPhases: VmSyncPhases = {
    planMs: 0,
    viewMs: 0,
    connectMs: 0,
    extentsMs: 0,
    readMs: 0,
    readWaitMs: 0,
    digestMs: 0,
    finishMs: 0,
    closeMs: 0,
    bitmapMs: 0,
  };
  /** Per disk, once the point in time is taken: the bitmap it read and the one it started. */
  let taken: FleeceDisk[] | undefined;
  /**
   * The view being closed once everything is read: it ends while the destination commits, and
   * before any bitmap it exports is touched again.
   */
  let closing: Promise<void> | undefined;
  try {
    const r = await syncOnce({
      ...o,
      sources: o.sources ?? o.disks.map((d) => d.path),
      readVolumes: async (ctx) => {
        const view = await takeView(qmp, o, ctx, reads, vmPhases, (disks) => (taken = disks));
        const closeView = async (): Promise<void> => {
          const t = performance.now();
          await view.close();
          vmPhases.closeMs = performance.now() - t;
        };
        let outs: VolumeOut[];
        try {
          outs = await view.read();
        } catch (err) {
          await closeView().catch((e: unknown) => log.warn({ err: e }, "could not close the point-in-time view"));
          throw err;
        }
        closing = closeView();
        closing.catch(() => undefined); // awaited below
        return outs;
      },
    });
    await closing?.catch((err: unknown) =>
      log.warn({ err }, "could not close the point-in-time view after the snapshot; the next sync clears it"),
    );
    const t = performance.now();
    for (const d of taken ?? [])
      if (d.sinceBitmap !== undefined)
        await removeBitmap(qmp, d.node, d.sinceBitmap).catch((err: unknown) =>
          log.warn({ err, bitmap: d.sinceBitmap }, "could not remove the previous dirty bitmap; the next sync will"),
        );
    vmPhases.bitmapMs = performance.now() - t;
    log.debug({ snapshotId: r.snapshotId, phases: r.phases, vmPhases }, "VM sync phases");
    return { ...r, disks: reads, readBytes: reads.reduce((n, d) => n + d.readBytes, 0), vmPhases };
  } catch (err) {
    await closing?.catch(() => undefined);
    // The changes since the parent are split between the disabled previous bitmap and the new one:
    // put them back together, or drop both (the next sync is then a full read).
    for (const d of taken ?? []) {
      const undo =
        d.sinceBitmap !== undefined
          ? restoreBitmap(qmp, d.node, d.sinceBitmap, d.nextBitmap)
          : removeBitmap(qmp, d.node, d.nextBitmap);
      await undo.catch(async (e: unknown) => {
        log.warn({ err: e, node: d.node }, "could not restore the dirty bitmap; dropping it");
        await removeBitmap(qmp, d.node, d.nextBitmap).catch(() => undefined);
        if (d.sinceBitmap !== undefined) await removeBitmap(qmp, d.node, d.sinceBitmap).catch(() => undefined);
      });
    }
    throw err;
  } finally {
    qmp.close();
  }
}

/** Decides per disk what to read, drops stale bitmaps of ours, and takes the point in time. */
async function takeView(
  qmp: QmpClient,
  o: VmSyncOptions,
  ctx: VolumeReadContext,
  reads: VmDiskRead[],
  phases: VmSyncPhases,
  onTaken: (disks: FleeceDisk[]) => void,
): Promise<{ read: () => Promise<VolumeOut[]>; close: () => Promise<void> }> {
  const log = replicationLogger(o, { vm: o.vm, host: o.sourceHost });
  let t = performance.now();
  const lap = (k: keyof VmSyncPhases): void => {
    const now = performance.now();
    phases[k] += now - t;
    t = now;
  };
  const since = ctx.parentId === undefined ? undefined : bitmapName(ctx.parentId);
  const disks: FleeceDisk[] = [];
  const plans: Array<{ name: string; prev: SourceCache["volumes"][number] | undefined; why: string; driver: string }> =
    [];
  // What an earlier sync left (an export that holds the previous bitmap busy) goes first; in the
  // usual case there is nothing and the disks' nodes come from the same round trip.
  const names = o.disks.map((d) => d.node);
  const [cleared, queried] = await Promise.all([clearFleeceLeftovers(qmp, names), blockNodes(qmp, names)]);
  const nodes = cleared ? await blockNodes(qmp, names) : queried;
  for (const [k, d] of o.disks.entries()) {
    const node = nodes[k]!;
    const name = basename(d.path);
    const prev = ctx.cache?.volumes.find((v) => v.name === name);
    const bm = since === undefined ? undefined : node.bitmaps.find((b) => b.name === since);
    const why = ctx.parentId === undefined ? "the first snapshot" : usable(bm, prev, node.sizeBytes);
    for (const stale of node.bitmaps.filter((b) => OURS.test(b.name) && (why !== "" || b.name !== since)))
      await removeBitmap(qmp, d.node, stale.name);
    disks.push({
      node: d.node,
      sizeBytes: node.sizeBytes,
      nextBitmap: bitmapName(ctx.snapshotId),
      ...(why === "" ? { sinceBitmap: since } : {}),
      persistent: d.format === "qcow2" && node.driver === "qcow2",
      granularityBytes: o.granularityBytes ?? 64 * 1024,
    });
    plans.push({ name, prev, why, driver: node.driver });
    if (why !== "") log.info({ node: d.node, reason: why }, "full read of the disk");
  }
  lap("planMs");
  const view = await openFleeceView(qmp, o.runDir, disks, () => onTaken(disks));
  lap("viewMs");
  const read = async (): Promise<VolumeOut[]> => {
    t = performance.now();
    const outs: VolumeOut[] = [];
    for (const [k, d] of disks.entries()) {
      const plan = plans[k]!;
      const incremental = d.sinceBitmap !== undefined;
      const nbd = await NbdClient.connect(view.socket, {
        exportName: d.node,
        metaContext: incremental ? `qemu:dirty-bitmap:${d.sinceBitmap}` : "base:allocation",
      });
      lap("connectMs");
      try {
        const extents = (await nbd.extents()).filter((e) =>
          incremental ? (e.flags & NBD_STATE_DIRTY) !== 0 : (e.flags & NBD_STATE_ZERO) === 0,
        );
        lap("extentsMs");
        const image = d.sizeBytes === nbd.size ? await openImage(o.disks[k]!, plan.driver, nbd.size) : undefined;
        const out = await readViewVolume({
          nbd,
          name: plan.name,
          batcher: ctx.batcher,
          link: ctx.link,
          cs: ctx.cs,
          since: incremental ? plan.prev : undefined,
          bases: plan.prev,
          extents,
          ...(image
            ? {
                direct: {
                  read: (offset: number, into: Buffer) => readFully(image, offset, into),
                  overwritten: () => overwritten(view.socket, d.node),
                },
              }
            : {}),
        }).finally(() => image?.close());
        lap("readMs");
        const { readBytes, reads: requests, reread, readWaitMs, digestMs, finishMs } = out;
        phases.readWaitMs += readWaitMs;
        phases.digestMs += digestMs;
        phases.finishMs += finishMs;
        log.debug(
          {
            node: d.node,
            direct: image !== undefined,
            readBytes,
            requests,
            reread,
            peakInflight: nbd.peakInflight,
            readWaitMs,
            digestMs,
            finishMs,
          },
          "read the disk's view",
        );
        reads.push({
          name: plan.name,
          mode: incremental ? "incremental" : "full",
          ...(incremental ? {} : { reason: plan.why }),
          readBytes: out.readBytes,
          sizeBytes: out.vol.sizeBytes,
        });
        outs.push(out);
      } finally {
        await nbd.close();
      }
    }
    return outs;
  };
  return { read, close: () => view.close() };
}

/** A raw disk's image opened for reading, when it can stand for the view's unchanged blocks. */
async function openImage(d: VmSyncDisk, driver: string, size: number): Promise<FileHandle | undefined> {
  if (d.openImage === undefined || d.format !== "raw" || driver !== "raw") return undefined;
  const fh = await d.openImage();
  if ((await fh.stat()).size === size) return fh;
  await fh.close();
  return undefined;
}

/** Reads `into.length` bytes at `offset` of the image, all of them. */
async function readFully(fh: FileHandle, offset: number, into: Buffer): Promise<Buffer> {
  const got = await readAll(fh, into, offset);
  if (got < into.length)
    throw new SourceReadError(`the image ended at ${offset + got}, inside a read of ${into.length} bytes`);
  return into;
}

/**
 * The ranges of the disk the fleece holds (allocation depth 1): the guest overwrote them after the
 * point in time, and QEMU copied their old data into the fleece first.
 */
async function overwritten(socket: string, exportName: string): Promise<Extent[]> {
  const nbd = await NbdClient.connect(socket, { exportName, metaContext: "qemu:allocation-depth" });
  try {
    return (await nbd.extents()).filter((e) => e.flags === 1);
  } finally {
    await nbd.close();
  }
}
