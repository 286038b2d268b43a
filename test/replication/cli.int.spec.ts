import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { generateImage } from "../../cli/image.js";
import { runPitrCommand } from "../../cli/pitr.js";
import { clientRoleOf } from "../../cli/client.js";
import { setProcessConnectDefaults } from "#common/nats.js";
import { UsageError } from "../../cli/args.js";
import { sha256File } from "../../cli/verify.js";
import { startReplicationService, type ReplicationServiceHandle } from "#replication";
import { registerHosts, startTestNats, type TestNats } from "./support.js";
import { freePort } from "#common/nats-server.js";
import { eventually } from "../support/prometheus.js";

const MiB = 1024 * 1024;

/** Runs a PITR command in-process and returns its exit code and the JSON it printed. */
async function run(t: TestNats, ...argv: string[]): Promise<{ code: number; json: unknown }> {
  const lines: string[] = [];
  const spy = vi
    .spyOn(process.stdout, "write")
    .mockImplementation((s: string | Uint8Array) => (lines.push(String(s)), true));
  // As `dwcp` runs it: a client command connects with its role's credentials.
  const role = clientRoleOf(argv[0] ?? "");
  setProcessConnectDefaults({ credentials: role && t.secure?.credentialsOf(role), waitOnFirstConnect: false });
  try {
    const code = await runPitrCommand(argv[0] ?? "", [...argv.slice(1), "--nats", t.server.url, "--json"]);
    return { code: code ?? -1, json: JSON.parse(lines.join("").trim().split("\n").at(-1) ?? "null") };
  } finally {
    spy.mockRestore();
  }
}

describe("dwcp PITR commands", () => {
  let t: TestNats;
  let services: ReplicationServiceHandle[] = [];
  beforeAll(async () => {
    t = await startTestNats(true, { secure: true });
    // Hosts a and b are the deployment's: their movers are registered (as `dwcp up` does).
    await registerHosts(t, ["a", "b"]);
    // `replicate` asks host a's replication service to sync, `restore` host b's to write (`dwcp up`
    // starts one per host).
    services = await Promise.all(
      ["a", "b"].map((host) =>
        startReplicationService(
          { host, "data-dir": t.dir, nats: t.server.url },
          { ...process.env, ...t.secure?.env(`replication-${host}`) },
        ),
      ),
    );
    await mkdir(join(t.dir, "hosts/a/vms"), { recursive: true });
    await generateImage(join(t.dir, "hosts/a/vms/d.img"), { sizeBytes: 3 * MiB + 10, zeroFraction: 0.5, seed: 4 });
  });
  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    await t?.stop();
  });

  it("replicate, snapshots, restore, replay, backup and restore-log work end to end", async () => {
    const dd = ["--data-dir", t.dir];
    const s1 = await run(
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
      ...dd,
    );
    expect(s1).toMatchObject({ code: 0, json: { bytes: 3 * MiB + 10 } });
    const s2 = await run(
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
      "--keep",
      "1",
      ...dd,
    );
    expect(s2.json).toMatchObject({ changedBytes: 0, pruned: [(s1.json as { snapshotId: string }).snapshotId] });
    const snaps = await run(t, "snapshots", "--vm", "v", ...dd); // read with D/trust.json
    expect((snaps.json as unknown[]).length).toBe(1);
    const r = await run(t, "restore", "--vm", "v", "--at", new Date().toISOString(), "--to", "b:out", ...dd);
    expect(r.code).toBe(0);
    expect(await sha256File(join(t.dir, "hosts/b/out/d.img"))).toBe(await sha256File(join(t.dir, "hosts/a/vms/d.img")));
    const view = await run(t, "replay", "--until", new Date().toISOString(), "--vm", "v", ...dd);
    expect(view.json).toMatchObject({
      events: 3,
      replications: [{ vm: "v", pruned: [(s1.json as { snapshotId: string }).snapshotId] }],
      ignored: { count: 0 },
    });
    const b = await run(t, "backup", "--out", join(t.dir, "log.backup"), ...dd); // signed with D/creds/admin.nk
    expect(b.json).toMatchObject({ messages: 3 });
    // Checked against D/trust.json's admin key, its events against their producers.
    const fromFile = await run(t, "replay", "--backup", join(t.dir, "log.backup"), ...dd);
    expect((fromFile.json as { replications: unknown[] }).replications).toEqual(
      (view.json as { replications: unknown[] }).replications,
    );
  });

  it("says what is wrong with the flags", async () => {
    await expect(run(t, "replay")).rejects.toBeInstanceOf(UsageError);
    await expect(run(t, "restore", "--vm", "v", "--to", "b:x")).rejects.toThrow(/--at TIME or --snapshot ID/);
    await expect(
      run(t, "replicate", "--vm", "v", "--from", "a:d", "--to", "b:x", "--keep", "1", "--keep-for", "1h"),
    ).rejects.toThrow(/one of --keep/);
    expect(runPitrCommand("status", [])).toBeUndefined();
  });

  it("serves a --every schedule's recovery point on --metrics-listen, and only with --every", async () => {
    const dd = ["--data-dir", t.dir];
    const args = ["--vm", "m", "--from", "a:vms/d.img", "--to", "b:repl-m", ...dd];
    const port = await freePort();
    await expect(run(t, "replicate", ...args, "--metrics-listen", `127.0.0.1:${port}`)).rejects.toThrow(UsageError);
    const schedule = run(t, "replicate", ...args, "--every", "1s", "--metrics-listen", `127.0.0.1:${port}`);
    try {
      const text = await eventually("the schedule's first recovery point", async () => {
        const body = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
        return /^dwcp_replication_last_snapshot_timestamp_seconds\{vm="m"/m.test(body) ? body : undefined;
      });
      expect(text).toMatch(/^dwcp_replication_rpo_target_seconds\{vm="m",svc="replicate"\} 1$/m);
      const at = Number(/^dwcp_replication_last_snapshot_timestamp_seconds\{vm="m"[^}]*\} (\S+)$/m.exec(text)?.[1]);
      expect(Date.now() / 1000 - at).toBeLessThan(60);
      expect(text).not.toContain(t.dir);
    } finally {
      process.emit("SIGINT"); // what Ctrl-C does: the schedule stops after the sync in flight
    }
    expect((await schedule).code).toBe(0);
  });
});
