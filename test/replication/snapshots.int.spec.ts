import { truncateSync } from "node:fs";
import { copyFile, mkdir, open, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateImage, prng, fillRandom } from "../../cli/image.js";
import { zeroCopy } from "#native/index.js";
import { allocatedBytes, sha256File } from "../../cli/verify.js";
import { DestinationAgent, inProcess, type Transport } from "../../services/replication/src/app/destination.js";
import { replayWith } from "../../services/replication/src/app/replay.js";
import { pickSnapshot, restoreFromStore } from "../../services/replication/src/app/restore.js";
import { applyRetention } from "../../services/replication/src/app/retention.js";
import { syncOnce, type SyncOptions } from "../../services/replication/src/app/sync.js";
import { SnapshotNotFoundError } from "../../services/replication/src/domain/errors.js";
import { referencedChunks } from "../../services/replication/src/domain/store/manifest.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { markTime, startTestNats, type TestNats } from "./support.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const TMPFS_MAGIC = 0x01021994;

/** Overwrites `count` random 4 KiB pages with random bytes. */
async function scatter(path: string, count: number, seed: number): Promise<void> {
  const next = prng(seed);
  const size = (await stat(path)).size;
  const fh = await open(path, "r+");
  const page = Buffer.alloc(4096);
  for (let i = 0; i < count; i++) {
    fillRandom(page, next);
    await fh.write(page, 0, page.length, (next() % Math.floor(size / 4096 - 1)) * 4096);
  }
  await fh.close();
}

async function writeAt(path: string, pos: number, buf: Buffer): Promise<void> {
  const fh = await open(path, "r+");
  await fh.write(buf, 0, buf.length, pos);
  await fh.close();
}

describe("snapshots, restore and retention", () => {
  let t: TestNats;
  let agent: DestinationAgent;
  let base: Omit<SyncOptions, "transport">;
  let disk: string;
  let mem: string;
  beforeAll(async () => {
    t = await startTestNats();
    agent = await DestinationAgent.open(join(t.dir, "b", ".dwcp-store"));
    disk = join(t.dir, "a", "disk.img");
    mem = join(t.dir, "a", "mem.img");
    await mkdir(join(t.dir, "a"), { recursive: true });
    await generateImage(disk, { sizeBytes: 8 * MiB + 5_000, zeroFraction: 0.6, seed: 5 });
    await generateImage(mem, { sizeBytes: 2 * MiB, zeroFraction: 0.2, seed: 6 });
    base = {
      vm: "web",
      sources: [disk, mem],
      sourceHost: "a",
      destinationHost: "b",
      storePath: agent.store.dir,
      log: new ReplicationLog(t.nats),
      stateDir: join(t.dir, "a", ".dwcp-repl"),
      chunkSizeBytes: 256 * KiB,
    };
  });
  afterAll(async () => t?.stop());

  it("restores each of T1 < T2 < T3 byte-identical, replays each, and retention keeps what is referenced", async () => {
    const copies: Array<{ at: Date; id: string; disk: string; mem: string; wire: number }> = [];
    const snap = async (i: number) => {
      const r = await syncOnce({ ...base, transport: inProcess(agent) });
      const c = {
        at: await markTime(),
        id: r.snapshotId,
        disk: join(t.dir, `disk.t${i}`),
        mem: join(t.dir, `mem.t${i}`),
        wire: r.wireBytes,
      };
      await copyFile(disk, c.disk);
      await copyFile(mem, c.mem);
      copies.push(c);
      return r;
    };
    const r1 = await snap(1);
    expect(r1.parentId).toBeUndefined();
    await scatter(disk, 24, 1);
    await writeAt(disk, 8 * MiB + 5_000, Buffer.alloc(300 * KiB + 123, 7)); // grown
    const r2 = await snap(2);
    expect(r2.parentId).toBe(r1.snapshotId);
    // Scattered pages in whole 256 KiB chunks were checked from the keyframes' page chaining
    // values; the grown last chunk (no page tree) was rebuilt.
    expect(agent.counters.fromChainingValues).toBeGreaterThan(0);
    expect(r2.changedBytes).toBeLessThan(r1.changedBytes / 4);
    expect(r2.wireBytes).toBeLessThan(1.5 * r2.changedBytes + 64 * KiB);
    await writeAt(disk, 1 * MiB, Buffer.alloc(1 * MiB)); // a zeroed range
    await scatter(mem, 5, 2);
    await snap(3);

    for (const [i, c] of copies.entries()) {
      const out = join(t.dir, `restore-${i}`);
      const r = await restoreFromStore(pickSnapshot((await base.log.read("web")).state, { at: c.at }), {
        vm: "web",
        toDir: out,
      });
      expect(r.snapshotId).toBe(c.id);
      expect(await sha256File(join(out, "disk.img"))).toBe(await sha256File(c.disk));
      expect(await sha256File(join(out, "mem.img"))).toBe(await sha256File(c.mem));
      expect(await allocatedBytes(join(out, "disk.img"))).toBeLessThan((await stat(c.disk)).size * 0.6);
      const view = await replayWith(t.nats, { untilTime: c.at, vm: "web" });
      expect(view.replications[0]?.snapshots.map((s) => s.snapshotId)).toEqual(copies.slice(0, i + 1).map((x) => x.id));
    }

    // keep 2: T1 goes, but its chunks are the bases of T2's and T3's page deltas and must stay.
    const ret = await applyRetention({ log: base.log, store: agent.store, vm: "web", policy: { keep: 2 }, graceMs: 0 });
    expect(ret.pruned).toEqual([copies[0]?.id]);
    const { state } = await base.log.read("web");
    const kept = await Promise.all(state.snapshots.map((s) => agent.store.readManifest(s.manifest, s.manifestBlake3)));
    for (const h of referencedChunks(kept)) expect(await agent.store.has(h), h).toBe(true);
    expect(() => pickSnapshot(state, { at: copies[0]?.at ?? new Date(0) })).toThrow(SnapshotNotFoundError);
    for (const i of [1, 2]) {
      const r = await restoreFromStore(pickSnapshot(state, { snapshotId: copies[i]?.id ?? "" }), {
        vm: "web",
        toDir: join(t.dir, `again-${i}`),
      });
      expect(await sha256File(r.files[0]?.path ?? "")).toBe(await sha256File(copies[i]?.disk ?? ""));
    }
    // keep 1: T2 goes too; the range T3 zeroed is referenced by nothing now and is deleted.
    const ret1 = await applyRetention({
      log: base.log,
      store: agent.store,
      vm: "web",
      policy: { keep: 1 },
      graceMs: 0,
    });
    expect(ret1.pruned).toEqual([copies[1]?.id]);
    expect(ret1.chunksDeleted).toBeGreaterThan(0);
    const last = await restoreFromStore(pickSnapshot((await base.log.read("web")).state, {}), {
      vm: "web",
      toDir: join(t.dir, "last"),
    });
    expect(await sha256File(last.files[0]?.path ?? "")).toBe(await sha256File(copies[2]?.disk ?? ""));
    expect(await sha256File(last.files[1]?.path ?? "")).toBe(await sha256File(copies[2]?.mem ?? ""));
  });

  it("an interrupted sync leaves the previous snapshot restorable and the next sync completes", async () => {
    const before = (await base.log.read("web")).state.snapshots.at(-1);
    await scatter(disk, 200, 3);
    let calls = 0;
    const dying: Transport = {
      request: (f) => (++calls > 1 ? Promise.reject(new Error("destination agent killed")) : agent.handle(f)),
    };
    await expect(syncOnce({ ...base, transport: dying })).rejects.toThrow("killed");
    const { state } = await base.log.read("web");
    expect(state.snapshots.at(-1)?.snapshotId).toBe(before?.snapshotId);
    const prev = await restoreFromStore(pickSnapshot(state, {}), { vm: "web", toDir: join(t.dir, "prev") });
    expect(prev.snapshotId).toBe(before?.snapshotId);

    const next = await syncOnce({ ...base, transport: inProcess(agent) });
    expect(next.parentId).toBe(before?.snapshotId);
    const out = join(t.dir, "next");
    await restoreFromStore(pickSnapshot((await base.log.read("web")).state, {}), { vm: "web", toDir: out });
    expect(await sha256File(join(out, "disk.img"))).toBe(await sha256File(disk));
  });

  it("a volume cut short during a sync is refused as changed, and nothing is committed", async () => {
    const img = join(t.dir, "a", "shrinking.img");
    await generateImage(img, { sizeBytes: 24 * MiB, zeroFraction: 0, seed: 9 });
    const o = { ...base, vm: "shrinking", sources: [img], concurrency: 1 };
    await syncOnce({ ...o, transport: inProcess(agent) });
    const before = (await base.log.read("shrinking")).state.snapshots.at(-1);
    // Enough changed pages that the first "put" leaves while later blocks are still to be read.
    await scatter(img, 3000, 4);
    let cut = false;
    const cutting: Transport = {
      request: (f) => {
        if (!cut) truncateSync(img, 4 * MiB);
        cut = true;
        return agent.handle(f);
      },
    };
    await expect(syncOnce({ ...o, transport: cutting })).rejects.toMatchObject({ code: "SOURCE_CHANGED" });
    expect(cut).toBe(true);
    expect((await base.log.read("shrinking")).state.snapshots.at(-1)?.snapshotId).toBe(before?.snapshotId);
  });

  it("writes runs of >= 1 MiB with O_DIRECT, the rest and a partial last page through the page cache", async () => {
    // 3 MiB of data, a 1 MiB hole, 2 MiB + 777 bytes of data: 5 MiB go direct, 777 bytes buffered.
    const vm = join(t.dir, "a", "direct.img");
    const next = prng(9);
    const [head, tail] = [Buffer.alloc(3 * MiB), Buffer.alloc(2 * MiB + 777, 1)];
    fillRandom(head, next);
    fillRandom(tail, next);
    const fh = await open(vm, "w");
    await fh.write(head, 0, head.length, 0);
    await fh.write(tail, 0, tail.length, 4 * MiB);
    await fh.close();
    await syncOnce({ ...base, vm: "direct", sources: [vm], transport: inProcess(agent) });
    const out = join(t.dir, "direct-out");
    const r = await restoreFromStore(pickSnapshot((await base.log.read("direct")).state, {}), {
      vm: "direct",
      toDir: out,
    });
    expect(await sha256File(join(out, "direct.img"))).toBe(await sha256File(vm));
    expect((await stat(join(out, "direct.img"))).size).toBe(6 * MiB + 777);
    expect(await allocatedBytes(join(out, "direct.img")), "the zero MiB stays a hole").toBeLessThanOrEqual(
      5 * MiB + 4096,
    );
    const direct =
      zeroCopy.available && (await statfs(out)).type !== TMPFS_MAGIC && process.env["DWCP_DIRECT_IO"] !== "off";
    expect(r.directBytes).toBe(direct ? 5 * MiB : 0);
  });
});
