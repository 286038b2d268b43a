import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateImage } from "../../cli/image.js";
import { sha256File } from "../../cli/verify.js";
import { DestinationAgent, inProcess } from "../../services/replication/src/app/destination.js";
import { pickSnapshot, restoreFromStore } from "../../services/replication/src/app/restore.js";
import { syncOnce, type SyncOptions } from "../../services/replication/src/app/sync.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { startTestNats, type TestNats } from "./support.js";

const MiB = 1024 * 1024;

/** Random bytes: the page travels as 4 KiB (lz4 finds nothing), which the byte counts below rely on. */
async function overwritePage(path: string, page: number): Promise<void> {
  const fh = await open(path, "r+");
  await fh.write(randomBytes(4096), 0, 4096, page * 4096);
  await fh.close();
}

// A sync remembers the cache of the snapshot it committed; the next sync in the same process uses
// it while the log still names that snapshot as the latest, and the files otherwise.
describe("the source's fingerprint cache kept in memory", () => {
  let t: TestNats;
  let base: Omit<SyncOptions, "transport">;
  let agent: DestinationAgent;
  let disk: string;
  beforeAll(async () => {
    t = await startTestNats();
    agent = await DestinationAgent.open(join(t.dir, "b", ".dwcp-store"));
    disk = join(t.dir, "a", "disk.img");
    await mkdir(join(t.dir, "a"), { recursive: true });
    await generateImage(disk, { sizeBytes: 4 * MiB, zeroFraction: 0.1, seed: 11 });
    base = {
      vm: "memo",
      sources: [disk],
      sourceHost: "a",
      destinationHost: "b",
      storePath: agent.store.dir,
      log: new ReplicationLog(t.nats),
      stateDir: join(t.dir, "a", ".dwcp-repl"),
      chunkSizeBytes: 64 * 1024,
    };
  });
  afterAll(async () => t?.stop());

  it("serves the next sync without the cache files, and not once another snapshot is the latest", async () => {
    const sync = (o: Partial<SyncOptions> = {}) => syncOnce({ ...base, ...o, transport: inProcess(agent) });
    await sync();
    expect(await readdir(join(base.stateDir, "memo"))).not.toHaveLength(0);

    // Without its files the sync still knows which pages changed: one page travels.
    await rm(join(base.stateDir, "memo"), { recursive: true });
    await overwritePage(disk, 7);
    const second = await sync();
    expect(second.chunksSent).toBe(1);
    expect(second.changedBytes).toBe(4096);

    // Another writer (its own state dir) commits a snapshot: the log's latest is no longer the one
    // this state dir remembers, so its next sync reads the files (there are none: a full offer).
    await overwritePage(disk, 9);
    const other = await sync({ stateDir: join(t.dir, "a", ".other-repl") });
    expect(other.parentId).toBe(second.snapshotId);
    await rm(join(base.stateDir, "memo"), { recursive: true, force: true });
    await overwritePage(disk, 11);
    const third = await sync();
    expect(third.parentId).toBe(other.snapshotId);
    // Nothing known: every chunk is offered, the store has all but the one with page 11, which goes
    // whole (the remembered cache would have sent pages 9 and 11: 8 KiB).
    expect(third.changedBytes).toBe(64 * 1024);

    const out = join(t.dir, "restored");
    await restoreFromStore(pickSnapshot((await base.log.read("memo")).state, {}), { vm: "memo", toDir: out });
    expect(await sha256File(join(out, "disk.img"))).toBe(await sha256File(disk));
  });

  it("commits only the changed chunk entries, and the whole manifest to an agent without the parent", async () => {
    const o = { vm: "changes", stateDir: join(t.dir, "a", ".changes-repl") };
    const sync = (to: DestinationAgent) => syncOnce({ ...base, ...o, transport: inProcess(to) });
    await sync(agent);
    await overwritePage(disk, 3);
    const second = await sync(agent);
    // One page and its put (a few hundred bytes of header each way), a commit naming one chunk:
    // the 64-chunk manifest (~4.3 KB of hashes) does not travel.
    expect(second.changedBytes).toBe(4096);
    expect(second.wireBytes).toBeLessThan(4096 + 2500);

    // A restarted agent on the same store does not hold the parent: the whole manifest goes.
    const restarted = await DestinationAgent.open(agent.store.dir);
    await overwritePage(disk, 5);
    const third = await sync(restarted);
    expect(third.parentId).toBe(second.snapshotId);
    // Each chunk with data is a 64-hex-digit hash in it (an all-zero chunk is null).
    const image = await readFile(disk);
    let dataChunks = 0;
    for (let at = 0; at < image.length; at += 64 * 1024)
      if (image.subarray(at, at + 64 * 1024).some((b) => b !== 0)) dataChunks += 1;
    expect(dataChunks).toBeGreaterThan(32);
    expect(third.wireBytes).toBeGreaterThan(second.wireBytes + dataChunks * 64);
    await overwritePage(disk, 6);
    const fourth = await sync(restarted); // and it holds the parent again
    expect(fourth.wireBytes).toBeLessThan(4096 + 2500);

    const out = join(t.dir, "restored-changes");
    await restoreFromStore(pickSnapshot((await base.log.read("changes")).state, {}), { vm: "changes", toDir: out });
    expect(await sha256File(join(out, "disk.img"))).toBe(await sha256File(disk));
  });

  it("sends every chunk to a store that is not the parent's, and restores from it", async () => {
    const o = { vm: "second", stateDir: join(t.dir, "a", ".second-repl") };
    await syncOnce({ ...base, ...o, transport: inProcess(agent) });
    // The same VM into another store (another host's): it holds none of the chain's chunks.
    const other = await DestinationAgent.open(join(t.dir, "c", ".dwcp-store"));
    await overwritePage(disk, 2);
    const second = await syncOnce({
      ...base,
      ...o,
      destinationHost: "c",
      storePath: other.store.dir,
      transport: inProcess(other),
    });
    expect(second.changedBytes).toBeGreaterThan(32 * 64 * 1024);
    const out = join(t.dir, "restored-second");
    const latest = pickSnapshot((await base.log.read("second")).state, {});
    expect(latest.destination).toEqual({ host: "c", store: other.store.dir });
    await restoreFromStore(latest, { vm: "second", toDir: out });
    expect(await sha256File(join(out, "disk.img"))).toBe(await sha256File(disk));
  });
});
