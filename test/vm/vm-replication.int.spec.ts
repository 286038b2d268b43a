import { open } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  renameSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import type { VmDefinitionInput } from "#schemas/index.js";
import { QmpClient } from "../../services/mover/src/infra/vm/qmp.js";
import { blockNode } from "../../services/mover/src/infra/vm/fleece.js";
import { listVms, startVm, stopVm } from "../../services/mover/src/infra/vm/runner.js";
import { DestinationAgent, inProcess } from "../../services/replication/src/app/destination.js";
import { pickSnapshot, restoreFromStore } from "../../services/replication/src/app/restore.js";
import { syncVmOnce, type VmSyncOptions } from "../../services/replication/src/app/vm-sync.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { startTestNats, type TestNats } from "../replication/support.js";
import { buildGuest, checkCounterImage, serialWhen } from "../support/guest.js";
import { startReplicationService } from "#replication";
import { runPitrCommand } from "../../cli/pitr.js";
import { runVm } from "../../cli/vm.js";

/** Runs a PITR command of the CLI in-process and returns the JSON it printed. */
async function cli(...argv: string[]): Promise<unknown> {
  const lines: string[] = [];
  const spy = vi
    .spyOn(process.stdout, "write")
    .mockImplementation((s: string | Uint8Array) => (lines.push(String(s)), true));
  try {
    await runPitrCommand(argv[0] ?? "", [...argv.slice(1), "--nats", t.server.url, "--json"]);
    return JSON.parse(lines.join("").trim().split("\n").pop() ?? "null") as unknown;
  } finally {
    spy.mockRestore();
  }
}

// Crash-consistent replication of the counting guest (test/support/guest.ts) while it writes:
// every snapshot is one point in time (fleecing), later ones read only what the dirty bitmap marks.

const MiB = 1024 * 1024;
const DISK = 16 * MiB;
const dir = mkdtempSync(join(tmpdir(), "dwcp-test-vmrep-"));
// The `dwcp up` layout the replication service reads: host a's root and the VMs `dwcp vm` runs.
const root = join(dir, "hosts", "a");
const stateDir = join(dir, "vms");

const definition: VmDefinitionInput = {
  version: 1,
  name: "rep1",
  root,
  memoryMiB: 128,
  disks: [{ id: "disk0", path: "vms/rep1/disk.img" }],
  boot: { kernel: "boot/vmlinuz", initrd: "boot/initrd.img", append: "console=ttyS0 quiet panic=-1" },
};

/** The guest's latest count on its console, once it is at least `n`. */
async function counterAtLeast(n: number, timeoutMs = 60_000): Promise<number> {
  const last = (text: string): number => {
    const all = [...text.matchAll(/dwcp-counter (\d+)/g)];
    return all.length > 0 ? Number(all[all.length - 1]![1]) : 0;
  };
  return last(await serialWhen(stateDir, "rep1", (text) => last(text) >= n, `counted to ${n}`, timeoutMs));
}

/** The console of VM `name` once `re` matches it. */
const serialOf = (name: string, re: RegExp, timeoutMs = 60_000): Promise<string> =>
  serialWhen(stateDir, name, (text) => re.test(text), `matched ${re}`, timeoutMs);

let t: TestNats;
let agent: DestinationAgent;
let base: Omit<VmSyncOptions, "transport">;

beforeAll(async () => {
  const guest = buildGuest();
  mkdirSync(join(root, "boot"), { recursive: true });
  copyFileSync(guest.kernel, join(root, "boot/vmlinuz"));
  copyFileSync(guest.initrd, join(root, "boot/initrd.img"));
  mkdirSync(join(root, "vms/rep1"), { recursive: true });
  writeFileSync(join(root, "vms/rep1/disk.img"), "");
  truncateSync(join(root, "vms/rep1/disk.img"), DISK);
  // 4 MiB of data the guest never touches (past its log while this test runs): a full read reads it.
  const fh = openSync(join(root, "vms/rep1/disk.img"), "r+");
  writeSync(fh, randomBytes(4 * MiB), 0, 4 * MiB, 8 * MiB);
  closeSync(fh);
  t = await startTestNats();
  agent = await DestinationAgent.open(join(dir, "b", ".dwcp-store"));
  await startVm(definition, stateDir);
  base = {
    vm: "rep1",
    qmp: join(stateDir, "rep1", "qmp.sock"),
    runDir: join(stateDir, "rep1"),
    disks: [{ node: "disk0", path: "vms/rep1/disk.img", format: "raw" }],
    sourceHost: "a",
    destinationHost: "b",
    storePath: agent.store.dir,
    log: new ReplicationLog(t.nats),
    stateDir: join(dir, "a", ".dwcp-repl"),
    chunkSizeBytes: 64 * 1024,
  };
}, 600_000);

afterAll(async () => {
  for (const vm of await listVms(stateDir)) await stopVm(stateDir, vm.name).catch(() => undefined);
  await t?.stop();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe("replicating a running VM", () => {
  it("snapshots a writing guest consistently, reads only dirty blocks, and all after a lost bitmap", async () => {
    // Every other sync reads the raw image directly (QEMU says what the guest overwrote since the
    // point in time, read again through NBD); the others read every block through NBD.
    let n = 0;
    const sync = () =>
      syncVmOnce({
        ...base,
        disks: base.disks.map((d) => (n++ % 2 === 0 ? { ...d, openImage: () => open(join(root, d.path), "r") } : d)),
        transport: inProcess(agent),
      });
    let seen = await counterAtLeast(3);
    const results = [];
    /** Per snapshot, the guest's count on its console just before and just after the sync. */
    const windows = new Map<string, [number, number]>();
    const timed = async () => {
      const before = await counterAtLeast(0);
      const r = await sync();
      windows.set(r.snapshotId, [before, await counterAtLeast(0)]);
      return r;
    };
    for (let k = 0; k < 3; k++) {
      results.push(await timed());
      seen = await counterAtLeast(seen + 2); // the guest wrote on between the snapshots
    }
    expect(results.map((r) => r.disks[0]?.mode)).toEqual(["full", "incremental", "incremental"]);
    expect(results[0]!.disks[0]!.reason).toBe("the first snapshot");
    expect(results[0]!.readBytes).toBeGreaterThanOrEqual(4 * MiB); // every allocated block, not the holes
    expect(results[0]!.readBytes).toBeLessThan(DISK / 2);
    for (const r of results.slice(1)) {
      expect(r.parentId).toBeDefined();
      expect(r.readBytes).toBeGreaterThan(0);
      expect(r.readBytes).toBeLessThanOrEqual(DISK / 16); // a few 64 KiB chunks of a 16 MiB disk
    }

    // The bitmap goes (as after a QEMU restart with a raw disk): the next sync reads every
    // allocated block, and is still one point in time.
    const qmp = await QmpClient.connect(base.qmp);
    try {
      const node = await blockNode(qmp, "disk0");
      expect(node.bitmaps.map((b) => b.name)).toEqual([`dwcp-${results[2]!.snapshotId}`]);
      await qmp.executeAs("block-dirty-bitmap-remove", z.object({}).loose(), {
        node: "disk0",
        name: node.bitmaps[0]!.name,
      });
    } finally {
      qmp.close();
    }
    seen = await counterAtLeast(seen + 2); // the guest wrote on since the last snapshot
    const lost = await timed();
    expect(lost.disks[0]).toMatchObject({ mode: "full", reason: "no dirty bitmap of the previous snapshot" });
    expect(lost.readBytes).toBeGreaterThanOrEqual(4 * MiB);
    results.push(lost);
    seen = await counterAtLeast(seen + 2);
    const after = await timed();
    expect(after.disks[0]?.mode).toBe("incremental");
    results.push(after);

    // Every snapshot restores to an image of one moment, each later than the one before.
    const { state } = await base.log.read("rep1");
    let previous = -1;
    for (const r of results) {
      const out = join(dir, "restored", r.snapshotId);
      await restoreFromStore(pickSnapshot(state, { snapshotId: r.snapshotId }), { vm: "rep1", toDir: out });
      const image = checkCounterImage(join(out, "disk.img"));
      expect(image, r.snapshotId).toMatchObject({ consistent: true });
      // One moment between the start and the end of its sync (the console lags the disk by a step).
      const [before, after] = windows.get(r.snapshotId)!;
      expect(image.header).toBeGreaterThanOrEqual(before - 1);
      expect(image.header).toBeLessThanOrEqual(after + 1);
      expect(image.header).toBeGreaterThan(previous);
      previous = image.header;
    }
  }, 180_000);
});

describe("dwcp replicate --from HOST (a running VM, through the host's replication service)", () => {
  it("reads the VM through QEMU, incrementally from its second snapshot, and restores a consistent image", async () => {
    vi.stubEnv("DWCP_NATS_INSECURE", "on"); // the test's nats-server has no auth
    const service = await startReplicationService({ host: "a", "data-dir": dir, nats: t.server.url });
    try {
      const replicate = async () =>
        (await cli("replicate", "--vm", "rep1", "--from", "a", "--to", "a:repl", "--chunk-size", "64K")) as {
          snapshotId: string;
          readBytes: number;
          disks: Array<{ name: string; mode: string; reason?: string }>;
        };
      // The service keeps its own source cache: its first sync of the VM reads it whole.
      const first = await replicate();
      expect(first.disks).toEqual([expect.objectContaining({ name: "disk.img", mode: "full" })]);
      await counterAtLeast((await counterAtLeast(0)) + 2);
      const second = await replicate();
      expect(second.disks).toEqual([expect.objectContaining({ name: "disk.img", mode: "incremental" })]);
      expect(second.readBytes).toBeLessThanOrEqual(DISK / 16);
      const restored = (await cli(
        "restore",
        "--vm",
        "rep1",
        "--snapshot",
        second.snapshotId,
        "--to",
        "a:out",
        "--data-dir",
        dir,
      )) as { files: Array<{ path: string }> };
      const image = checkCounterImage(restored.files[0]!.path);
      expect(image).toMatchObject({ consistent: true });

      // A VM the host does not run is refused, naming it.
      await expect(cli("replicate", "--vm", "nope", "--from", "a", "--to", "a:repl")).rejects.toThrow(/nope/);

      // The service's snapshots record the VM's definition, its paths relative to the root.
      const { state } = await base.log.read("rep1");
      const snap = state.snapshots.find((s) => s.snapshotId === second.snapshotId)!;
      expect(snap.vmDefinition).toMatchObject({ name: "rep1", disks: [{ id: "disk0", path: "vms/rep1/disk.img" }] });
      expect(JSON.stringify(snap.vmDefinition)).not.toContain(dir);
      const at = snap.takenAt;
      const restoreStart = (snapshot: string[], to: string) =>
        cli("restore", "--vm", "rep1", ...snapshot, "--to", to, "--start", "--data-dir", dir) as Promise<{
          files: Array<{ path: string }>;
          started?: { name: string; state: string; pid?: number };
        }>;
      // Refused before anything is written: a snapshot without a definition (read directly, not
      // through the service), and a VM of that name running on the host.
      const bare = state.snapshots.find((s) => s.vmDefinition === undefined)!;
      await expect(restoreStart(["--snapshot", bare.snapshotId], "a:boot0")).rejects.toThrow(/no VM definition/);
      await expect(restoreStart(["--at", at], "a:boot1")).rejects.toThrow(/VM named rep1 is running on a/);
      expect(existsSync(join(root, "boot0"))).toBe(false);
      expect(existsSync(join(root, "boot1"))).toBe(false);

      // The source guest is gone; the restore at the snapshot's time boots it from the restored disk,
      // and the guest's counter goes on from the snapshot's value.
      await stopVm(stateDir, "rep1");
      // The kernel is not in the snapshot: without it at the same path under the root, refused.
      renameSync(join(root, "boot/vmlinuz"), join(root, "boot/vmlinuz.away"));
      await expect(restoreStart(["--at", at], "a:boot1")).rejects.toThrow(/boot\/vmlinuz.*does not exist/);
      expect(existsSync(join(root, "boot1"))).toBe(false);
      renameSync(join(root, "boot/vmlinuz.away"), join(root, "boot/vmlinuz"));
      const booted = await restoreStart(["--at", at], "a:boot1");
      expect(booted.started).toMatchObject({ name: "rep1", state: "running" });
      expect(booted.files.map((f) => f.path)).toEqual([join(root, "boot1", "disk.img")]);
      const bootLog = await serialOf("rep1", /dwcp-counter \d+/);
      expect(bootLog).toMatch(new RegExp(`dwcp-guest boot seq=${image.header}\\r?\\n`));
      const listed: string[] = [];
      await runVm(["list"], { json: true, "state-dir": stateDir }, (text) => listed.push(text));
      expect(JSON.parse(listed.join(""))).toEqual([expect.objectContaining({ name: "rep1", state: "running" })]);
      // A second --start over the running restored guest is refused; it keeps running.
      await expect(restoreStart(["--at", at], "a:boot2")).rejects.toThrow(/VM named rep1 is running on a/);
      expect(existsSync(join(root, "boot2"))).toBe(false);
    } finally {
      await service.stop();
      vi.unstubAllEnvs();
    }
  }, 120_000);
});
