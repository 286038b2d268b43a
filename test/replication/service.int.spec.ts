import { mkdir } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  pingReplication,
  readReplication,
  replicateVm,
  replicationRpc,
  ReplicationCommandError,
  ReplicationServiceUnavailableError,
  startReplicationService,
  type ReplicationServiceHandle,
} from "#replication";
import { ReplicationReply, type ReplicateVm } from "#schemas/replication.js";
import { generateImage } from "../../cli/image.js";
import { runPitrCommand } from "../../cli/pitr.js";
import { clientRoleOf } from "../../cli/client.js";
import { requestHost, setProcessConnectDefaults } from "#common/nats.js";
import { sha256File } from "../../cli/verify.js";
import { spawnDwcp, spawnReplicationService, type DwcpProcess } from "./service-process.js";
import { registerHosts, startTestNats, type TestNats } from "./support.js";

const MiB = 1024 * 1024;
const SECRET = "replication-service-test-secret";

/** Runs a PITR command in-process and returns the JSON lines it printed. */
async function run(t: TestNats, ...argv: string[]): Promise<unknown[]> {
  const lines: string[] = [];
  const spy = vi
    .spyOn(process.stdout, "write")
    .mockImplementation((s: string | Uint8Array) => (lines.push(String(s)), true));
  // As `dwcp` runs it: a client command connects with its role's credentials.
  const role = clientRoleOf(argv[0] ?? "");
  setProcessConnectDefaults({ credentials: role && t.secure?.credentialsOf(role), waitOnFirstConnect: false });
  try {
    await runPitrCommand(argv[0] ?? "", [...argv.slice(1), "--nats", t.server.url, "--json"]);
    return lines
      .join("")
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as unknown);
  } finally {
    spy.mockRestore();
  }
}

const command = (vm: string, extra: Partial<ReplicateVm> = {}): ReplicateVm => ({
  type: "ReplicateVm",
  version: 1,
  commandId: `cmd-${vm}-${Math.random().toString(36).slice(2, 10)}`,
  vm,
  source: { host: "a", paths: ["vms/d.img"] },
  destination: { host: "b", dir: "repl" },
  chunkSizeBytes: 64 * 1024,
  ...extra,
});

describe("the replication service", () => {
  let t: TestNats;
  let service: DwcpProcess | undefined;
  let restorer: ReplicationServiceHandle | undefined;
  beforeAll(async () => {
    t = await startTestNats(true, { secure: true });
    // Hosts a and b are the deployment's: their movers are registered (as `dwcp up` does).
    await registerHosts(t, ["a", "b"]);
    await mkdir(join(t.dir, "hosts/a/vms"), { recursive: true });
    await generateImage(join(t.dir, "hosts/a/vms/d.img"), { sizeBytes: 2 * MiB + 100, zeroFraction: 0.3, seed: 5 });
  });
  afterAll(async () => {
    await service?.stop();
    await restorer?.stop();
    await t?.stop();
  });

  it("without a service, replicate says which service to start", async () => {
    const attempt = run(t, "replicate", "--vm", "v", "--from", "a:vms/d.img", "--to", "b:repl", "--data-dir", t.dir);
    await expect(attempt).rejects.toBeInstanceOf(ReplicationServiceUnavailableError);
    await expect(attempt).rejects.toThrow(`dwcp replication-service --host a --data-dir ${t.dir}`);
  });

  it("replicate goes through the service process, which commits the snapshot", async () => {
    service = await spawnReplicationService("a", t.dir, t.server.url, {
      DWCP_SECRET: SECRET,
      DWCP_DATA_PLAINTEXT: "on", // its "agent" below is a bare TCP server
      ...t.secure?.env("replication-a"),
    });
    const [printed] = (await run(
      t,
      "replicate",
      "--vm",
      "v",
      "--from",
      "a:vms/d.img",
      "--to",
      "b:repl",
      "--chunk-size",
      "64K",
    )) as Array<{ snapshotId: string; bytes: number }>;
    expect(printed).toMatchObject({ bytes: 2 * MiB + 100 });
    // The service process did the sync: it logged it, and the log names its snapshot.
    await service.waitFor((j) => j["msg"] === "synced" && j["snapshotId"] === printed?.snapshotId);
    const state = await readReplication(t.nats, "v");
    expect(state.snapshots.map((s) => s.snapshotId)).toEqual([printed?.snapshotId]);
    restorer = await startReplicationService(
      { host: "b", "data-dir": t.dir, nats: t.server.url },
      { ...process.env, ...t.secure?.env("replication-b") },
    );
    await run(t, "restore", "--vm", "v", "--snapshot", printed?.snapshotId ?? "", "--to", "b:out", "--data-dir", t.dir);
    expect(await sha256File(join(t.dir, "hosts/b/out/d.img"))).toBe(await sha256File(join(t.dir, "hosts/a/vms/d.img")));
  });

  it("rejects invalid commands with a logged error and keeps serving", async () => {
    const svc = service;
    if (!svc) throw new Error("the service did not start");
    const ask = async (body: string): Promise<ReplicationReply> =>
      ReplicationReply.parse((await requestHost(t.nats.nc, replicationRpc("a"), "a", body, { timeout: 5_000 })).json());
    expect(await ask("not json")).toMatchObject({ type: "ReplicationRejected", code: "INVALID_COMMAND" });
    expect(await ask(JSON.stringify({ ...command("v"), version: 3 }))).toMatchObject({
      type: "ReplicationRejected",
      code: "INVALID_COMMAND",
    });
    const tooMany = command("v", { source: { host: "a", paths: Array.from({ length: 65 }, (_, i) => `v${i}`) } });
    expect(await ask(JSON.stringify(tooMany))).toMatchObject({
      type: "ReplicationRejected",
      commandId: tooMany.commandId,
      code: "INVALID_COMMAND",
    });
    // source.running is a version 2 field: a version 1 command with it is refused, not run on files.
    const runningV1 = command("v", { source: { host: "a", paths: [], running: true } });
    expect(await ask(JSON.stringify(runningV1))).toMatchObject({
      type: "ReplicationRejected",
      code: "INVALID_COMMAND",
    });
    await svc.waitFor((j) => j["level"] === 50 && String(j["msg"]).startsWith("invalid replication command"));
    // Valid but not runnable here: refused before anything is read.
    await expect(
      replicateVm(t.nats.nc, command("v", { source: { host: "a", paths: ["../../etc/passwd"] } })),
    ).rejects.toMatchObject({ remoteCode: "PATH_OUTSIDE_ROOT" });
    // Still serving: a ping and a real sync both answer.
    expect(await pingReplication(t.nats.nc, "a")).toMatchObject({ type: "ReplicationPong", host: "a" });
    const r = await replicateVm(t.nats.nc, command("v"));
    expect(r.result.changedBytes).toBe(0);
    expect(svc.child.exitCode).toBeNull();
  });

  it("refuses a second command for a VM that is syncing", async () => {
    // A destination "agent" that accepts the link and never answers holds the first sync open.
    const held: Socket[] = [];
    let connected!: () => void;
    const linked = new Promise<void>((r) => (connected = r));
    const agent: Server = createServer((s) => (held.push(s), connected()));
    await new Promise<void>((r) => agent.listen(0, "127.0.0.1", r));
    const port = (agent.address() as { port: number }).port;
    try {
      const first = replicateVm(
        t.nats.nc,
        command("w", { destination: { host: "b", dir: "w", agent: { host: "127.0.0.1", port } } }),
      );
      first.catch(() => undefined);
      await linked;
      expect(await pingReplication(t.nats.nc, "a")).toMatchObject({ syncing: ["w"] });
      await expect(replicateVm(t.nats.nc, command("w"))).rejects.toMatchObject({ remoteCode: "SYNC_IN_PROGRESS" });
      for (const s of held) s.resetAndDestroy();
      await expect(first).rejects.toBeInstanceOf(ReplicationCommandError);
      expect((await readReplication(t.nats, "w")).snapshots).toEqual([]);
    } finally {
      await new Promise<void>((r) => agent.close(() => r()));
    }
  });

  it("replicate --every stops its schedule on Ctrl-C", async () => {
    const cli = spawnDwcp(
      [
        "replicate",
        "--vm",
        "e",
        "--from",
        "a:vms/d.img",
        "--to",
        "b:repl",
        "--every",
        "1h",
        "--json",
        "--nats",
        t.server.url,
      ],
      t.secure?.env("cli"),
    );
    await cli.waitFor((j) => typeof j["snapshotId"] === "string");
    expect(await cli.stop("SIGINT")).toBe(0);
    expect((await readReplication(t.nats, "e")).snapshots).toHaveLength(1);
  });
});
