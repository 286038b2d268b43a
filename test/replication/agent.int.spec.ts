import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateImage } from "../../cli/image.js";
import { sha256File } from "../../cli/verify.js";
import { pickSnapshot, restoreFromStore } from "../../services/replication/src/app/restore.js";
import { syncOnce, type SyncOptions } from "../../services/replication/src/app/sync.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { connectAgent } from "../../services/replication/src/infra/tcp.js";
import { spawnAgent, type AgentProcess } from "./agent-process.js";
import { startTestNats, type TestNats } from "./support.js";

const MiB = 1024 * 1024;
const SECRET = "replication-test-secret-0123456789";

describe("replication agent over TCP", () => {
  let t: TestNats;
  let agent: AgentProcess;
  let base: Omit<SyncOptions, "transport">;
  let disk: string;
  beforeAll(async () => {
    t = await startTestNats();
    disk = join(t.dir, "a", "disk.img");
    await mkdir(join(t.dir, "a"), { recursive: true });
    await generateImage(disk, { sizeBytes: 12 * MiB, zeroFraction: 0.3, seed: 9 });
    agent = await spawnAgent(join(t.dir, "b"), SECRET);
    base = {
      vm: "db",
      sources: [disk],
      sourceHost: "a",
      destinationHost: "b",
      storePath: join(t.dir, "b", ".dwcp-store"),
      log: new ReplicationLog(t.nats),
      stateDir: join(t.dir, "a", ".dwcp-repl"),
      chunkSizeBytes: 256 * 1024,
    };
  });
  afterAll(async () => {
    await agent?.kill();
    await t?.stop();
  });

  it("kill -9 of the destination agent mid-sync leaves the last snapshot restorable; the next completes", async () => {
    const link1 = await connectAgent({ host: "127.0.0.1", port: agent.port, secret: SECRET });
    const first = await syncOnce({ ...base, transport: link1 });
    await link1.close();
    await generateImage(disk, { sizeBytes: 12 * MiB, zeroFraction: 0.3, seed: 10 }); // most of it changes

    const link2 = await connectAgent({ host: "127.0.0.1", port: agent.port, secret: SECRET });
    let calls = 0;
    const killing = {
      request: async (f: Buffer) =>
        ++calls === 2 ? (await agent.kill("SIGKILL"), link2.request(f)) : link2.request(f),
    };
    await expect(syncOnce({ ...base, transport: killing })).rejects.toThrow(/link/);
    const { state } = await base.log.read("db");
    expect(state.snapshots.map((s) => s.snapshotId)).toEqual([first.snapshotId]);
    const prev = await restoreFromStore(pickSnapshot(state, {}), { vm: "db", toDir: join(t.dir, "prev") });
    expect(prev.snapshotId).toBe(first.snapshotId);

    agent = await spawnAgent(join(t.dir, "b"), SECRET);
    const link3 = await connectAgent({ host: "127.0.0.1", port: agent.port, secret: SECRET });
    const next = await syncOnce({ ...base, transport: link3 });
    await link3.close();
    expect(next.parentId).toBe(first.snapshotId);
    await restoreFromStore(pickSnapshot((await base.log.read("db")).state, {}), {
      vm: "db",
      toDir: join(t.dir, "next"),
    });
    expect(await sha256File(join(t.dir, "next", "disk.img"))).toBe(await sha256File(disk));
  });

  it("refuses a client without the secret", async () => {
    const bad = await connectAgent({ host: "127.0.0.1", port: agent.port, secret: "wrong-secret-wrong-secret" });
    await expect(syncOnce({ ...base, vm: "other", transport: bad })).rejects.toThrow(/link/);
  });
});
