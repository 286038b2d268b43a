import { execFileSync } from "node:child_process";
import { randomFillSync, randomInt } from "node:crypto";
import { mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { ensureLayout } from "#common/layout.js";
import { connectNats } from "#common/nats.js";
import { startNatsServer } from "#common/nats-server.js";
import { blockNode } from "../../services/mover/src/infra/vm/fleece.js";
import { QmpClient } from "../../services/mover/src/infra/vm/qmp.js";
import { startVm, stopVm } from "../../services/mover/src/infra/vm/runner.js";
import { pickSnapshot, restoreFromStore } from "../../services/replication/src/app/restore.js";
import { syncOnce, type SyncOptions } from "../../services/replication/src/app/sync.js";
import { syncVmOnce, type VmSyncDisk } from "../../services/replication/src/app/vm-sync.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { connectAgent } from "../../services/replication/src/infra/tcp.js";
import { checkCounterImage } from "../../test/support/guest.js";
import { spawnAgent, type AgentProcess } from "./agent-process.js";
import { DISK_PATH, FILL_OFFSET, type Lab } from "./live-guest.js";

// The incremental half of the live bench: the counting guest runs while dwcp replicates it the way
// `dwcp replicate --vm` does (syncVmOnce: a fleeced point-in-time view read over NBD, later
// snapshots reading only what the dirty bitmap marks). After a first snapshot, `fraction` of the
// disk is overwritten through the guest's own virtio-blk backend (HMP qemu-io), in random aligned
// blocks of `blockBytes` with distinct random data, and the second snapshot is timed. The same
// image, once its VM stopped, takes the stopped-image path (syncOnce: read and fingerprint the
// whole file) to a separate agent that had synced it before the guest booted: it carries the same
// changes. Each agent is its own process on loopback TCP, as bench/incremental.ts runs it.
// Every snapshot is restored and checked with checkCounterImage.

export type CacheMode = "warm" | "cold";

export interface IncrementalFigures {
  /** warm: the image in the page cache before each timed sync; cold: its pages dropped first. */
  cache: CacheMode;
  diskBytes: number;
  dirtyBytes: number;
  blockBytes: number;
  vmFullS: number;
  vmIncrementalS: number;
  vmIncrementalReadBytes: number;
  vmIncrementalMode: string;
  vmIncrementalWireBytes: number;
  /** The sync's own phase timings (sync.ts), ms. */
  vmIncrementalPhasesMs: Record<string, number>;
  /** Where the VM sync's reading went (vm-sync.ts: QMP, NBD, read and store, closing the view), ms. */
  vmIncrementalVmPhasesMs: Record<string, number>;
  fileSyncS: number;
  fileSyncWireBytes: number;
  fileSyncPhasesMs: Record<string, number>;
  ratio: number;
  snapshots: { name: string; consistent: boolean; header: number; reason?: string }[];
  consistent: boolean;
}

const HumanMonitor = z.string().max(1 << 20);
const SECRET = "bench-live-secret-0123456789abcdef";

interface Ctx {
  lab: Lab;
  dir: string;
  log: ReplicationLog;
  vmAgent: AgentProcess;
  fileAgent: AgentProcess;
  say: (s: string) => void;
}

/** One round per cache mode, each on a fresh copy of the guest's disk, against the same two agents. */
export async function incrementalBench(
  lab: Lab,
  o: { fraction: number; blockBytes: number; caches: CacheMode[]; direct: boolean },
  say: (s: string) => void,
): Promise<IncrementalFigures[]> {
  const dir = join(lab.dir, "incr");
  mkdirSync(dir, { recursive: true });
  const server = await startNatsServer({ storeDir: join(dir, "nats") });
  const agents: AgentProcess[] = [];
  const nats = await connectNats(server.url, "bench-live");
  try {
    await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
    const vmAgent = await spawnAgent(join(dir, "vm-b"), SECRET);
    agents.push(vmAgent);
    const fileAgent = await spawnAgent(join(dir, "file-b"), SECRET);
    agents.push(fileAgent);
    const ctx: Ctx = { lab, dir, log: new ReplicationLog(nats), vmAgent, fileAgent, say };
    const out: IncrementalFigures[] = [];
    for (const cache of o.caches) out.push(await round(ctx, cache, o));
    return out;
  } finally {
    for (const a of agents) await a.kill("SIGTERM");
    await nats.nc.close().catch(() => undefined);
    await server.stop();
  }
}

async function over<T>(agent: AgentProcess, fn: (transport: SyncOptions["transport"]) => Promise<T>): Promise<T> {
  const link = await connectAgent({ host: "127.0.0.1", port: agent.port, secret: SECRET });
  try {
    return await fn(link);
  } finally {
    await link.close();
  }
}

/** Writes back, then drops (cold) or loads (warm) the image's pages: only this file's, not the host's cache. */
function settle(disk: string, cache: CacheMode): void {
  execFileSync("sync");
  if (cache === "cold") execFileSync("dd", [`if=${disk}`, "iflag=nocache", "count=0", "status=none"]);
  else execFileSync("cat", [disk], { stdio: ["ignore", "ignore", "inherit"], maxBuffer: 0 });
}

async function round(
  c: Ctx,
  cache: CacheMode,
  o: { fraction: number; blockBytes: number; direct: boolean },
): Promise<IncrementalFigures> {
  const root = c.lab.root(`incr-${cache}-a`);
  const disk = c.lab.freshDisk(root);
  const diskBytes = statSync(disk).size;
  const stateDir = c.lab.stateDir(`incr-${cache}-vms`);
  const say = (s: string): void => c.say(`incremental (${cache}): ${s}`);
  try {
    const fileBase = {
      vm: `g-file-${cache}`,
      sources: [disk],
      sourceHost: "a",
      destinationHost: "b",
      storePath: join(c.dir, "file-b", ".dwcp-store"),
      log: c.log,
      stateDir: join(c.dir, `a-file-repl-${cache}`),
    };
    say("file-based sync of the image before boot (the baseline's first snapshot) ...");
    await over(c.fileAgent, (transport) => syncOnce({ ...fileBase, transport }));

    await startVm(c.lab.definition(root, 256), stateDir);
    await c.lab.counted(stateDir, 2);
    const vmBase = {
      vm: `g-${cache}`,
      qmp: join(stateDir, "g", "qmp.sock"),
      runDir: join(stateDir, "g"),
      disks: [
        {
          node: "disk0",
          path: DISK_PATH,
          format: "raw" as const,
          // As `dwcp replicate --vm` does (vm-plan.ts, beneath its root): the raw image read directly.
          ...(o.direct ? { openImage: () => open(disk, "r") } : {}),
        } satisfies VmSyncDisk,
      ],
      sourceHost: "a",
      destinationHost: "b",
      storePath: join(c.dir, "vm-b", ".dwcp-store"),
      log: c.log,
      stateDir: join(c.dir, `a-vm-repl-${cache}`),
    };
    const vmSync = () => over(c.vmAgent, (transport) => syncVmOnce({ ...vmBase, transport }));
    say("first snapshot of the running VM ...");
    let t = performance.now();
    const full = await vmSync();
    const vmFullS = (performance.now() - t) / 1000;

    const dirtyBytes = await dirty(join(stateDir, "g"), diskBytes, o.fraction, o.blockBytes, c.dir);
    settle(disk, cache);
    say(`${dirtyBytes} bytes overwritten; second snapshot of the running VM ...`);
    t = performance.now();
    const incr = await vmSync();
    const vmIncrementalS = (performance.now() - t) / 1000;
    await stopVm(stateDir, "g");

    settle(disk, cache);
    say("file-based sync of the stopped image ...");
    t = performance.now();
    const file = await over(c.fileAgent, (transport) => syncOnce({ ...fileBase, transport }));
    const fileSyncS = (performance.now() - t) / 1000;

    const snapshots: IncrementalFigures["snapshots"] = [];
    for (const [name, vm, snapshotId] of [
      ["vm-full", vmBase.vm, full.snapshotId],
      ["vm-incremental", vmBase.vm, incr.snapshotId],
      ["file", fileBase.vm, file.snapshotId],
    ] as const) {
      const out = join(c.dir, "restored", `${name}-${cache}`);
      const snap = pickSnapshot((await c.log.read(vm)).state, { snapshotId });
      await restoreFromStore(snap, { vm, toDir: out });
      const image = checkCounterImage(join(out, "disk.img"));
      snapshots.push({ name, ...image });
      rmSync(out, { recursive: true, force: true });
    }
    return {
      cache,
      diskBytes,
      dirtyBytes,
      blockBytes: o.blockBytes,
      vmFullS,
      vmIncrementalS,
      vmIncrementalReadBytes: incr.readBytes,
      vmIncrementalMode: incr.disks[0]?.mode ?? "none",
      vmIncrementalWireBytes: incr.wireBytes,
      vmIncrementalPhasesMs: roundPhases(incr.phases),
      vmIncrementalVmPhasesMs: roundPhases(incr.vmPhases),
      fileSyncS,
      fileSyncWireBytes: file.wireBytes,
      fileSyncPhasesMs: roundPhases(file.phases),
      ratio: vmIncrementalS / fileSyncS,
      snapshots,
      consistent: snapshots.every((s) => s.consistent),
    };
  } finally {
    await stopVm(stateDir, "g").catch(() => undefined);
    rmSync(disk, { force: true });
  }
}

/**
 * Overwrites `fraction` of the disk past the counter's log in distinct random blocks, each with its
 * own random data, through the running guest's virtio-blk backend (so QEMU's dirty bitmap sees
 * them as guest writes). Returns the bytes written.
 */
async function dirty(runDir: string, size: number, fraction: number, block: number, tmp: string): Promise<number> {
  const first = FILL_OFFSET / block;
  const blocks = Math.floor(size / block) - first;
  const want = Math.max(1, Math.round((size * fraction) / block));
  const chosen = new Set<number>();
  while (chosen.size < want) chosen.add(first + randomInt(blocks));
  const src = join(tmp, "dirty.bin");
  const buf = Buffer.alloc(block);
  const qmp = await QmpClient.connect(join(runDir, "qmp.sock"));
  try {
    const before = (await blockNode(qmp, "disk0")).bitmaps.reduce((n, bm) => Math.max(n, bm.count), 0);
    for (const b of [...chosen].sort((x, y) => x - y)) {
      randomFillSync(buf);
      writeFileSync(src, buf);
      // qemu-io prints its "wrote ..." line to QEMU's stdout here, not to the monitor: only errors come back.
      const out = await qmp.executeAs("human-monitor-command", HumanMonitor, {
        "command-line": `qemu-io -d disk0-dev/virtio-backend "write -s ${src} ${b * block} ${block}"`,
      });
      if (out.trim() !== "") throw new Error(`qemu-io write at ${b * block} failed: ${out}`);
    }
    // The writes went through the guest's block backend: the snapshot's dirty bitmap saw them all.
    const after = (await blockNode(qmp, "disk0")).bitmaps.reduce((n, bm) => Math.max(n, bm.count), 0);
    if (after - before < want * block)
      throw new Error(`the dirty bitmap grew by ${after - before} bytes, not the ${want * block} written`);
  } finally {
    qmp.close();
  }
  return want * block;
}

const roundPhases = (p: object): Record<string, number> =>
  Object.fromEntries(Object.entries(p).map(([k, v]) => [k, typeof v === "number" ? Math.round(v) : -1]));
