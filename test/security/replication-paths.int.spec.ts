// `dwcp replicate` and `dwcp restore` are confined like `migrate`: the replication service opens
// sources, stores, caches and restore targets beneath its hosts' held root fds, refuses paths that
// leave a root (absolute elsewhere, `..`, a symlink to outside), names only hosts the deployment
// knows, and takes only VM names that are not NATS wildcards. Every refusal is visible: a typed
// ReplicationRejected with its code (the path as given, no host path), a logged warning, or the
// CLI's exit 2. A python3 process swapping a store directory with a symlink to outside the root
// (renameat2 RENAME_EXCHANGE) during syncs never gets a file written outside.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { lstat, mkdir, open, readdir, realpath, rename, symlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  readReplication,
  replicateVm,
  replicationRpc,
  restoreVm,
  ReplicationCommandError,
  type ReplicationSynced,
} from "#replication";
import { requestHost } from "#common/nats.js";
import { ReplicationReply, type ReplicateVm, type RestoreVm } from "#schemas/replication.js";
import { syncOnce } from "../../services/replication/src/app/sync.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { connectAgent } from "../../services/replication/src/infra/tcp.js";
import { spawnAgent } from "../replication/agent-process.js";
import { spawnReplicationService, type DwcpProcess } from "../replication/service-process.js";
import { registerHosts, startTestNats, type TestNats } from "../replication/support.js";
import { startSwapper, stopSwapper } from "#test/support/swapper.js";

const KiB = 1024;
const BIN = resolve(import.meta.dirname, "../../bin/dwcp.mjs");

/** The CLI as a process: its exit code and what it wrote to stderr. */
async function cli(t: TestNats, ...args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args, "--nats", t.server.url], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, "exit")) as [number | null];
  return { code, stderr };
}

let n = 0;
const replicate = (vm: string, paths: string[], to: { host: string; dir: string }): ReplicateVm => ({
  type: "ReplicateVm",
  version: 1,
  commandId: `sec-${vm}-${++n}`,
  vm,
  source: { host: "a", paths },
  destination: to,
  chunkSizeBytes: 64 * KiB,
});

const restore = (vm: string, snapshotId: string, to: { host: string; dir: string }): RestoreVm => ({
  type: "RestoreVm",
  version: 1,
  commandId: `sec-restore-${vm}-${++n}`,
  vm,
  snapshotId,
  to,
});

/** The service's refusal of `p`: its code, and a message that carries no host path under `dir` (a root). */
async function refusedWith(p: Promise<unknown>, code: string, dir: string): Promise<ReplicationCommandError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ReplicationCommandError);
  const e = err as ReplicationCommandError;
  expect(e.remoteCode).toBe(code);
  expect(e.message).not.toContain(dir);
  return e;
}

describe("replication is confined to the hosts' roots", () => {
  let t: TestNats;
  let work: string;
  let outside: string;
  let services: DwcpProcess[] = [];
  let first: ReplicationSynced;
  const root = (host: string): string => join(work, "hosts", host);

  beforeAll(async () => {
    t = await startTestNats();
    work = await realpath(t.dir);
    outside = join(work, "outside");
    await registerHosts(t, ["a", "b"]);
    await mkdir(join(root("a"), "vms"), { recursive: true });
    await mkdir(join(root("b")), { recursive: true });
    await mkdir(join(outside, "evil"), { recursive: true });
    await writeFile(join(root("a"), "vms", "d.img"), randomBytes(512 * KiB));
    await writeFile(join(outside, "secret.img"), Buffer.alloc(256 * KiB, 0x53));
    await symlink(join(outside, "secret.img"), join(root("a"), "vms", "link"));
    await symlink(outside, join(root("b"), "escape"));
    // The test server takes anonymous plaintext clients.
    const insecure = { DWCP_NATS_INSECURE: "on" };
    services = await Promise.all(["a", "b"].map((h) => spawnReplicationService(h, work, t.server.url, insecure)));
    first = await replicateVm(t.nats.nc, replicate("v", ["vms/d.img"], { host: "b", dir: "repl" }));
  });

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    await t?.stop();
  });

  it("refuses --from a:/etc/hostname, logged, and stores nothing of it", async () => {
    const e = await refusedWith(
      replicateVm(t.nats.nc, replicate("etc", ["/etc/hostname"], { host: "b", dir: "etc" })),
      "PATH_OUTSIDE_ROOT",
      join(work, "hosts"),
    );
    expect(e.message).toContain("/etc/hostname");
    await services[0]!.waitFor((j) => j["level"] === 40 && j["code"] === "PATH_OUTSIDE_ROOT");
    expect((await readReplication(t.nats, "etc")).snapshots).toEqual([]);
    expect(existsSync(join(root("b"), "etc"))).toBe(false);
    await refusedWith(
      replicateVm(t.nats.nc, replicate("etc", ["../../../../etc/hostname"], { host: "b", dir: "etc" })),
      "PATH_OUTSIDE_ROOT",
      join(work, "hosts"),
    );
  });

  it("refuses --from a:link where link is a symlink to a file outside the root", async () => {
    const e = await refusedWith(
      replicateVm(t.nats.nc, replicate("lnk", ["vms/link"], { host: "b", dir: "lnk" })),
      "PATH_OUTSIDE_ROOT",
      join(work, "hosts"),
    );
    expect(e.message).toContain("vms/link");
    expect(e.message).not.toContain(outside);
    expect((await readReplication(t.nats, "lnk")).snapshots).toEqual([]);
    expect(existsSync(join(root("b"), "lnk"))).toBe(false);
  });

  it("refuses a store outside the destination's root, by path or through a symlink", async () => {
    for (const dir of [join(outside, "store"), "../a/vms", "escape/store"]) {
      await refusedWith(
        replicateVm(t.nats.nc, replicate("st", ["vms/d.img"], { host: "b", dir })),
        "PATH_OUTSIDE_ROOT",
        join(work, "hosts"),
      );
    }
    expect(await readdir(outside)).toEqual(expect.not.arrayContaining(["store"]));
    expect(await readdir(join(outside, "evil"))).toEqual([]);
  });

  it("refuses restore --to b:/abs/outside (and ../, and through a symlink) and writes nothing outside", async () => {
    const snap = first.result.snapshotId;
    for (const dir of [join(outside, "restored"), "../../outside/restored", "escape/restored"]) {
      const asked = restoreVm(t.nats.nc, restore("v", snap, { host: "b", dir }));
      await refusedWith(asked, "PATH_OUTSIDE_ROOT", join(work, "hosts"));
    }
    await services[1]!.waitFor((j) => j["level"] === 40 && j["code"] === "PATH_OUTSIDE_ROOT");
    expect(existsSync(join(outside, "restored"))).toBe(false);
    // Inside the root it restores.
    const ok = await restoreVm(t.nats.nc, restore("v", snap, { host: "b", dir: "out" }));
    expect(ok.result.bytes).toBe(512 * KiB);
  });

  it("refuses an unknown host: exit 2 from the CLI, UNKNOWN_HOST from the service", async () => {
    const r1 = await cli(t, "replicate", "--vm", "v", "--from", "a:vms/d.img", "--to", "zz:dir");
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(/--to: host "zz" is not known here/);
    const r2 = await cli(t, "restore", "--vm", "v", "--snapshot", first.result.snapshotId, "--to", "zz:path");
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/--to: host "zz" is not known here/);
    await refusedWith(
      replicateVm(t.nats.nc, replicate("zz", ["vms/d.img"], { host: "zz", dir: "dir" })),
      "UNKNOWN_HOST",
      join(work, "hosts"),
    );
    expect(existsSync(join(work, "hosts", "zz"))).toBe(false);
    expect((await readReplication(t.nats, "zz")).snapshots).toEqual([]);
  });

  it("refuses VM names that are NATS wildcards or have dots, in the CLI and in the service", async () => {
    for (const vm of ["*", "a.b", ">"]) {
      const r = await cli(t, "replicate", "--vm", vm, "--from", "a:vms/d.img", "--to", "b:repl");
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("--vm:");
      const s = await cli(t, "restore", "--vm", vm, "--snapshot", first.result.snapshotId, "--to", "b:out");
      expect(s.code).toBe(2);
      const snaps = await cli(t, "snapshots", "--vm", vm);
      expect(snaps.code).toBe(2);
      const ask = async (host: string, body: unknown): Promise<ReplicationReply> =>
        ReplicationReply.parse(
          (await requestHost(t.nats.nc, replicationRpc(host), host, JSON.stringify(body), { timeout: 5_000 })).json(),
        );
      expect(await ask("a", { ...replicate("v", ["vms/d.img"], { host: "b", dir: "repl" }), vm })).toMatchObject({
        type: "ReplicationRejected",
        code: "INVALID_COMMAND",
      });
      expect(await ask("b", { ...restore("v", first.result.snapshotId, { host: "b", dir: "out" }), vm })).toMatchObject(
        { type: "ReplicationRejected", code: "INVALID_COMMAND" },
      );
    }
  });

  /** Syncs a changed image into b:race while `a` and `b` are exchanged; every outcome typed. */
  async function syncsWhileSwapped(a: string, b: string): Promise<{ synced: number; refused: number }> {
    const outcomes = { synced: 0, refused: 0 };
    const swapper = await startSwapper(a, b);
    try {
      for (let i = 0; i < 25; i++) {
        const fh = await open(join(root("a"), "vms", "d.img"), "r+");
        await fh.write(randomBytes(64 * KiB), 0, 64 * KiB, (i % 8) * 64 * KiB);
        await fh.close();
        const done = await replicateVm(t.nats.nc, replicate("race", ["vms/d.img"], { host: "b", dir: "race" })).catch(
          (err: unknown) => err,
        );
        if (done instanceof Error) {
          expect(done).toBeInstanceOf(ReplicationCommandError);
          expect(["PATH_OUTSIDE_ROOT", "PATH_NOT_FOUND"], done.message).toContain(
            (done as ReplicationCommandError).remoteCode,
          );
          expect(done.message).not.toContain(join(work, "hosts"));
          outcomes.refused++;
        } else outcomes.synced++;
      }
    } finally {
      await stopSwapper(swapper);
    }
    return outcomes;
  }

  it("a store directory swapped for a symlink to outside mid-sync never gets a file written outside", async () => {
    await replicateVm(t.nats.nc, replicate("race", ["vms/d.img"], { host: "b", dir: "race" }));
    const store = join(root("b"), "race", ".dwcp-store");
    await symlink(join(outside, "evil"), join(root("b"), "race", "store-link"));
    await symlink(join(outside, "evil"), join(store, "packs-link"));
    const whole = await syncsWhileSwapped(store, join(root("b"), "race", "store-link"));
    if ((await lstat(store)).isSymbolicLink()) {
      // Left exchanged: put the directory back under its name for the second race.
      await rename(store, join(root("b"), "race", "tmp-link"));
      await rename(join(root("b"), "race", "store-link"), store);
      await rename(join(root("b"), "race", "tmp-link"), join(root("b"), "race", "store-link"));
    }
    const packs = await syncsWhileSwapped(join(store, "packs"), join(store, "packs-link"));
    expect(await readdir(join(outside, "evil"))).toEqual([]);
    expect(whole.synced + whole.refused).toBe(25);
    expect(packs.synced + packs.refused).toBe(25);
    // Both outcomes happened: syncs wrote through the held fds while the names were exchanged.
    expect(whole.refused + packs.refused).toBeGreaterThan(0);
    expect(whole.synced + packs.synced).toBeGreaterThan(0);
  });

  it("an agent's packs directory swapped for a symlink to outside gets no file outside (held fds)", async () => {
    const secret = "replication-paths-secret-0123456789";
    const agentRoot = join(work, "agent");
    const agent = await spawnAgent(agentRoot, secret);
    const packs = join(agentRoot, ".dwcp-store", "packs");
    await mkdir(join(outside, "agent-evil"));
    await symlink(join(outside, "agent-evil"), join(agentRoot, ".dwcp-store", "packs-link"));
    const disk = join(root("a"), "vms", "d.img");
    const swapper = await startSwapper(packs, join(agentRoot, ".dwcp-store", "packs-link"));
    try {
      for (let i = 0; i < 10; i++) {
        const fh = await open(disk, "r+");
        await fh.write(randomBytes(64 * KiB), 0, 64 * KiB, (i % 8) * 64 * KiB);
        await fh.close();
        const link = await connectAgent({ host: "127.0.0.1", port: agent.port, secret });
        try {
          await syncOnce({
            vm: "agent-race",
            sources: [disk],
            sourceHost: "a",
            destinationHost: "b",
            storePath: join(agentRoot, ".dwcp-store"),
            log: new ReplicationLog(t.nats),
            stateDir: join(work, "agent-state"),
            chunkSizeBytes: 64 * KiB,
            transport: link,
          });
        } finally {
          await link.close();
        }
      }
    } finally {
      await stopSwapper(swapper);
      await agent.kill();
    }
    expect(await readdir(join(outside, "agent-evil"))).toEqual([]);
    expect((await readReplication(t.nats, "agent-race")).snapshots).toHaveLength(10);
  });
});
