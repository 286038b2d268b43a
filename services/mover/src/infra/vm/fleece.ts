import { execFile } from "node:child_process";
import { copyFile, rename, rm, stat } from "node:fs/promises";
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

const toNode = (n: z.infer<typeof NamedNodes>[number]): BlockNode => ({
  node: n["node-name"],
  driver: n.drv,
  sizeBytes: n.image["virtual-size"],
  bitmaps: n["dirty-bitmaps"] ?? [],
});

/** The block nodes `names` (disks' format nodes), in their order, from one query. */
export async function blockNodes(qmp: QmpClient, names: string[]): Promise<BlockNode[]> {
  const nodes = await qmp.executeAs("query-named-block-nodes", NamedNodes, { flat: true });
  return names.map((name) => {
    const n = nodes.find((x) => x["node-name"] === name);
    if (n === undefined) throw new QmpError(`QEMU has no block node named ${name}`);
    return toNode(n);
  });
}

/** The block node `node` (a disk's format node, named by its definition's id). */
export async function blockNode(qmp: QmpClient, node: string): Promise<BlockNode> {
  const [n] = await blockNodes(qmp, [node]);
  return n!;
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
  /** The disk's size in bytes (its fleece is as large). */
  sizeBytes: number;
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
 * as they were (the transaction is all or nothing). The caller has cleared what an earlier view
 * may have left (`clearFleeceLeftovers`). Commands that do not depend on each other are sent
 * together (QMP answers them in order), so the view costs a few round trips to QEMU.
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
    await Promise.all([
      ...exported.map((node) => attempt(() => qmp.executeAs("block-export-del", Empty, { id: exportId(node) }))),
      ...(server ? [attempt(() => qmp.executeAs("nbd-server-stop", Empty))] : []),
      ...(jobs ? disks.map((d) => attempt(() => cancelJob(qmp, jobId(d.node)))) : []),
    ]);
    await Promise.all(
      added.map(async (node) => {
        await attempt(() => deleteNode(qmp, fleeceNode(node)));
        await attempt(() => rm(join(runDir, `${fleeceNode(node)}.qcow2`), { force: true }));
      }),
    );
    if (problems.length > 0) throw problems[0];
  };
  try {
    const files = await Promise.all(disks.map((d) => newFleeceFile(runDir, d)));
    const adds = await Promise.allSettled(
      disks.map(async (d, k) => {
        await qmp.executeAs("blockdev-add", Empty, {
          driver: "qcow2",
          "node-name": fleeceNode(d.node),
          file: { driver: "file", filename: files[k] },
          backing: d.node,
        });
        added.push(d.node);
      }),
    );
    for (const a of adds) if (a.status === "rejected") throw a.reason;
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
    // The NBD server starts with the transaction: it exports nothing until the fleeces are added.
    const start = () => qmp.executeAs("nbd-server-start", Empty, { addr: { type: "unix", data: { path: socket } } });
    const [taken, started] = await Promise.allSettled([qmp.executeAs("transaction", Empty, { actions }), start()]);
    if (started.status === "fulfilled") server = true;
    if (taken.status === "rejected") throw taken.reason;
    jobs = true;
    onTaken?.();
    if (started.status === "rejected") {
      // A server left by a killed sync, exporting nothing: ours to restart. One with exports is not.
      if ((await qmp.executeAs("query-block-exports", Exports)).length > 0) throw started.reason;
      await qmp.executeAs("nbd-server-stop", Empty);
      await start();
      server = true;
    }
    const exports = await Promise.allSettled(
      disks.map(async (d) => {
        await qmp.executeAs("block-export-add", Empty, {
          type: "nbd",
          id: exportId(d.node),
          "node-name": fleeceNode(d.node),
          name: d.node,
          writable: false,
          // qemu:allocation-depth says which blocks the fleece holds: those the guest overwrote since.
          "allocation-depth": true,
          ...(d.sinceBitmap !== undefined ? { bitmaps: [d.sinceBitmap] } : {}),
        });
        exported.push(d.node);
      }),
    );
    for (const e of exports) if (e.status === "rejected") throw e.reason;
    return { socket, exports: disks.map((d) => d.node), close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/**
 * A new, empty qcow2 fleece for disk `d`, copied from a template of its size kept in `runDir`
 * (made once with qemu-img, which takes tens of milliseconds to start; QEMU never opens it).
 */
async function newFleeceFile(runDir: string, d: FleeceDisk): Promise<string> {
  const template = join(runDir, `dwcp-fleece-template-${d.sizeBytes}.qcow2`);
  if (
    !(await stat(template).then(
      (st) => st.isFile(),
      () => false,
    ))
  ) {
    const part = `${template}.${process.pid}.part`;
    await execFileP("qemu-img", ["create", "-q", "-f", "qcow2", part, String(d.sizeBytes)]);
    await rename(part, template);
  }
  const file = join(runDir, `${fleeceNode(d.node)}.qcow2`);
  await copyFile(template, file);
  return file;
}

/**
 * What a sync killed mid-way (or a view that could not be closed) left in QEMU for `nodes`: their
 * exports, fleece jobs and fleece nodes, removed. One round of queries when nothing is left.
 * Returns whether anything was (the nodes' bitmaps may have been busy with it).
 */
export async function clearFleeceLeftovers(qmp: QmpClient, nodes: string[]): Promise<boolean> {
  const [exports, jobs, named] = await Promise.all([
    qmp.executeAs("query-block-exports", Exports),
    qmp.executeAs("query-jobs", Jobs),
    qmp.executeAs("query-named-block-nodes", NamedNodes, { flat: true }),
  ]);
  const ignore = (): undefined => undefined;
  let found = false;
  await Promise.all(
    nodes.map(async (node) => {
      if (exports.some((e) => e.id === exportId(node))) {
        found = true;
        await qmp.executeAs("block-export-del", Empty, { id: exportId(node), mode: "hard" }).catch(ignore);
      }
      if (jobs.some((j) => j.id === jobId(node))) {
        found = true;
        await cancelJob(qmp, jobId(node)).catch(ignore);
      }
      if (named.some((n) => n["node-name"] === fleeceNode(node))) {
        found = true;
        await deleteNode(qmp, fleeceNode(node)).catch(ignore);
      }
    }),
  );
  return found;
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
