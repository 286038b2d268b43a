import { execFile } from "node:child_process";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { z } from "zod";
import { QmpError, type QmpClient } from "./qmp.js";

// A point-in-time view of a running VM's disks through QEMU's copy-before-write fleecing, and the
// dirty bitmaps that say what changed since the previous view. In one QMP `transaction`, for every
// disk: a temporary qcow2 overlay (the fleece) backed by the disk gets a `blockdev-backup
// sync=none` from it, so every guest write first copies the old block into the fleece; a new dirty
// bitmap starts recording and the previous one stops. The fleeces are exported read-only over NBD
// on a unix socket in the VM's run directory, each with the previous bitmap, so a reader sees the
// disks as they were at the transaction and which blocks changed since the previous one.

const execFileP = promisify(execFile);

/** A dirty bitmap as `query-named-block-nodes` reports it. */
const DirtyBitmap = z
  .object({
    name: z.string().max(1023),
    recording: z.boolean(),
    busy: z.boolean(),
    granularity: z.number().int().positive(),
    count: z.number().int().nonnegative(),
    persistent: z.boolean().optional(),
    inconsistent: z.boolean().optional(),
  })
  .loose();
export type DirtyBitmap = z.infer<typeof DirtyBitmap>;

const NamedNodes = z.array(
  z
    .object({
      "node-name": z.string().max(256),
      drv: z.string().max(64),
      image: z.object({ "virtual-size": z.number().int().nonnegative() }).loose(),
      "dirty-bitmaps": z.array(DirtyBitmap).max(4096).optional(),
    })
    .loose(),
);
const Empty = z.object({}).loose();
const Exports = z.array(z.object({ id: z.string().max(256) }).loose());
const Jobs = z.array(
  z.object({ id: z.string().max(256), type: z.string().max(64), status: z.string().max(64) }).loose(),
);

export interface BlockNode {
  node: string;
  driver: string;
  sizeBytes: number;
  bitmaps: DirtyBitmap[];
}

/** The block node `node` (a disk's format node, named by its definition's id). */
export async function blockNode(qmp: QmpClient, node: string): Promise<BlockNode> {
  const nodes = await qmp.executeAs("query-named-block-nodes", NamedNodes, { flat: true });
  const n = nodes.find((x) => x["node-name"] === node);
  if (n === undefined) throw new QmpError(`QEMU has no block node named ${node}`);
  return { node, driver: n.drv, sizeBytes: n.image["virtual-size"], bitmaps: n["dirty-bitmaps"] ?? [] };
}

/** Removes a dirty bitmap (a missing one is not an error). */
export async function removeBitmap(qmp: QmpClient, node: string, name: string): Promise<void> {
  await qmp.executeAs("block-dirty-bitmap-remove", Empty, { node, name }).catch((err: unknown) => {
    if (!(err instanceof QmpError && /not found|Dirty bitmap '.*' not found/i.test(err.message))) throw err;
  });
}

export interface FleeceDisk {
  /** The disk's format node. */
  node: string;
  /** The bitmap that starts recording at this point in time. */
  nextBitmap: string;
  /** The recording bitmap whose changes the view exports (undefined: none, read everything). */
  sinceBitmap?: string;
  /** Keep `nextBitmap` in the image across QEMU restarts (qcow2 only). */
  persistent: boolean;
  /** Bytes per bitmap bit. */
  granularityBytes: number;
}

export interface FleeceView {
  /** The NBD server's unix socket. */
  socket: string;
  /** Export name per disk node (the node's name). */
  exports: string[];
  /** Stops the export, the backup jobs, removes the fleeces (idempotent, best effort past the first error). */
  close(): Promise<void>;
}

const fleeceNode = (node: string): string => `dwcp-fleece-${node}`;
const jobId = (node: string): string => `dwcp-fleece-job-${node}`;
const exportId = (node: string): string => `dwcp-export-${node}`;

/**
 * Takes the point in time: creates a fleece per disk under `runDir`, then one transaction adds the
 * next bitmaps, disables the previous ones and starts the backup jobs; then exports the fleeces
 * over NBD at `runDir/nbd.sock`. On failure everything started is torn down and the bitmaps are
 * as they were (the transaction is all or nothing).
 */
export async function openFleeceView(
  qmp: QmpClient,
  runDir: string,
  disks: FleeceDisk[],
  /** Called once the transaction held: the bitmaps have moved on even if the view then fails. */
  onTaken?: () => void,
): Promise<FleeceView> {
  const socket = join(runDir, "nbd.sock");
  const added: string[] = [];
  let jobs = false;
  let server = false;
  const exported: string[] = [];
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    const problems: unknown[] = [];
    const attempt = async (f: () => Promise<unknown>): Promise<void> => {
      await f().catch((err: unknown) => problems.push(err));
    };
    for (const node of exported) await attempt(() => qmp.executeAs("block-export-del", Empty, { id: exportId(node) }));
    if (server) await attempt(() => qmp.executeAs("nbd-server-stop", Empty));
    if (jobs) for (const d of disks) await attempt(() => cancelJob(qmp, jobId(d.node)));
    for (const node of added) {
      await attempt(() => deleteNode(qmp, fleeceNode(node)));
      await attempt(() => rm(join(runDir, `${fleeceNode(node)}.qcow2`), { force: true }));
    }
    if (problems.length > 0) throw problems[0];
  };
  try {
    await clearLeftovers(qmp, disks);
    for (const d of disks) {
      const { sizeBytes } = await blockNode(qmp, d.node);
      const file = join(runDir, `${fleeceNode(d.node)}.qcow2`);
      await execFileP("qemu-img", ["create", "-q", "-f", "qcow2", file, String(sizeBytes)]);
      await qmp.executeAs("blockdev-add", Empty, {
        driver: "qcow2",
        "node-name": fleeceNode(d.node),
        file: { driver: "file", filename: file },
        backing: d.node,
      });
      added.push(d.node);
    }
    const actions: unknown[] = [];
    for (const d of disks) {
      actions.push({
        type: "block-dirty-bitmap-add",
        data: { node: d.node, name: d.nextBitmap, persistent: d.persistent, granularity: d.granularityBytes },
      });
      if (d.sinceBitmap !== undefined)
        actions.push({ type: "block-dirty-bitmap-disable", data: { node: d.node, name: d.sinceBitmap } });
      actions.push({
        type: "blockdev-backup",
        data: { "job-id": jobId(d.node), device: d.node, target: fleeceNode(d.node), sync: "none" },
      });
    }
    await qmp.executeAs("transaction", Empty, { actions });
    jobs = true;
    onTaken?.();
    const start = () => qmp.executeAs("nbd-server-start", Empty, { addr: { type: "unix", data: { path: socket } } });
    await start().catch(async (err: unknown) => {
      // A server left by a killed sync, exporting nothing: ours to restart. One with exports is not.
      if ((await qmp.executeAs("query-block-exports", Exports)).length > 0) throw err;
      await qmp.executeAs("nbd-server-stop", Empty);
      await start();
    });
    server = true;
    for (const d of disks) {
      await qmp.executeAs("block-export-add", Empty, {
        type: "nbd",
        id: exportId(d.node),
        "node-name": fleeceNode(d.node),
        name: d.node,
        writable: false,
        ...(d.sinceBitmap !== undefined ? { bitmaps: [d.sinceBitmap] } : {}),
      });
      exported.push(d.node);
    }
    return { socket, exports: disks.map((d) => d.node), close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** What a sync killed mid-way left in QEMU (its export, job, fleece node): removed, best effort. */
async function clearLeftovers(qmp: QmpClient, disks: FleeceDisk[]): Promise<void> {
  const ignore = (): undefined => undefined;
  for (const d of disks) {
    await qmp.executeAs("block-export-del", Empty, { id: exportId(d.node), mode: "hard" }).catch(ignore);
    await cancelJob(qmp, jobId(d.node)).catch(ignore);
    await deleteNode(qmp, fleeceNode(d.node)).catch(ignore);
  }
}

/** Cancels a backup job and waits until QEMU has dropped it. */
async function cancelJob(qmp: QmpClient, id: string): Promise<void> {
  const gone = qmp.waitEvent("JOB_STATUS_CHANGE", 30_000, (e) => e.data?.["id"] === id && e.data["status"] === "null");
  gone.catch(() => undefined);
  const running = await qmp.executeAs("query-jobs", Jobs);
  if (!running.some((j) => j.id === id)) return;
  await qmp.executeAs("block-job-cancel", Empty, { device: id, force: true });
  await gone;
}

async function deleteNode(qmp: QmpClient, node: string): Promise<void> {
  await qmp.executeAs("blockdev-del", Empty, { "node-name": node });
}

/**
 * After a view whose reader failed: the changes since the previous view are split between the
 * disabled previous bitmap and the next one; merging the next into the previous and enabling it
 * again leaves things as if the view had not been taken. One transaction.
 */
export async function restoreBitmap(qmp: QmpClient, node: string, since: string, next: string): Promise<void> {
  await qmp.executeAs("transaction", Empty, {
    actions: [
      { type: "block-dirty-bitmap-merge", data: { node, target: since, bitmaps: [next] } },
      { type: "block-dirty-bitmap-enable", data: { node, name: since } },
      { type: "block-dirty-bitmap-remove", data: { node, name: next } },
    ],
  });
}
