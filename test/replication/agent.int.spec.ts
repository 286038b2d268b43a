import { existsSync, readdirSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateImage } from "../../cli/image.js";
import { sha256File } from "../../cli/verify.js";
import { openAgentStore } from "../../services/replication/src/app/destination.js";
import { pickSnapshot, restoreFromStore } from "../../services/replication/src/app/restore.js";
import { AgentStoreError } from "../../services/replication/src/domain/errors.js";
import { syncOnce, type SyncOptions } from "../../services/replication/src/app/sync.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { connectAgent } from "../../services/replication/src/infra/tcp.js";
import { replicateVm, startReplicationService } from "#replication";
import { spawnAgent, type AgentProcess } from "./agent-process.js";
import { registerHosts, startTestNats, type TestNats } from "./support.js";

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

  it("a sync through the service stores beneath --to's DIR on the agent, where its snapshot says", async () => {
    await registerHosts(t, ["b"]);
    await mkdir(join(t.dir, "hosts/a/vms"), { recursive: true });
    const src = join(t.dir, "hosts/a/vms/s.img");
    await generateImage(src, { sizeBytes: 2 * MiB, zeroFraction: 0.3, seed: 11 });
    const env = { ...process.env, DWCP_SECRET: SECRET, DWCP_DATA_PLAINTEXT: "on", DWCP_NATS_INSECURE: "on" };
    const svc = await startReplicationService({ host: "a", "data-dir": t.dir, nats: t.server.url }, env);
    try {
      await replicateVm(t.nats.nc, {
        type: "ReplicateVm",
        version: 1,
        commandId: "cmd-dr-store",
        vm: "dr",
        source: { host: "a", paths: ["vms/s.img"] },
        destination: { host: "b", dir: "dr/site1", agent: { host: "127.0.0.1", port: agent.port } },
        chunkSizeBytes: 256 * 1024,
      });
    } finally {
      await svc.stop();
    }
    const { state } = await base.log.read("dr");
    const store = join(t.dir, "b", "dr/site1", ".dwcp-store");
    expect(state.snapshots.map((s) => s.destination.store)).toEqual([store]);
    expect(readdirSync(join(store, "manifests", "dr"))).toHaveLength(1);
    // The agent keeps a store directory beneath its root.
    const link = await connectAgent({ host: "127.0.0.1", port: agent.port, secret: SECRET });
    await expect(openAgentStore(link, "../out", "the agent")).rejects.toBeInstanceOf(AgentStoreError);
    await link.close();
    expect(existsSync(join(t.dir, "out"))).toBe(false);
    // Restored from the recorded path alone: the store there holds the whole snapshot.
    await restoreFromStore(pickSnapshot(state, {}), { vm: "dr", toDir: join(t.dir, "dr-restored") });
    expect(await sha256File(join(t.dir, "dr-restored", "s.img"))).toBe(await sha256File(src));
  });

  it("refuses a client without the secret", async () => {
    const bad = await connectAgent({ host: "127.0.0.1", port: agent.port, secret: "wrong-secret-wrong-secret" });
    await expect(syncOnce({ ...base, vm: "other", transport: bad })).rejects.toThrow(/link/);
  });
});
