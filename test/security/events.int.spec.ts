import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forgedHistory } from "../support/forged-history.js";
import type { MigrationEvent } from "#schemas/index.js";
import { EventStore } from "#common/event-store.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import { EventSigner, EventVerifier, INSECURE, type EventTrust } from "#common/signing.js";
import type { Role } from "#common/credentials/provision.js";
import { connectNats } from "#common/nats.js";
import { startNatsServer } from "#common/nats-server.js";
import { ensureLayout } from "#common/layout.js";
import { foldTrusted } from "#migration";
import { backupWith } from "../../services/replication/src/app/backup.js";
import { restoreLogWith } from "../../services/replication/src/app/restore-log.js";
import { loadSigningKey, trustFromTrustFile } from "#replication";
import { signingKeyFromSeed } from "../../services/replication/src/infra/backup-signing.js";
import type { ReplayView } from "../../services/replication/src/domain/replay/view.js";
import { BIN } from "../../cli/stack.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { sha256File } from "../../cli/verify.js";
import { eventsOf, makeImage, startTestStack, waitForEvent } from "../support/stack.js";

// Forged events against a real stack: a history written by hand, facts signed by the wrong
// producer, a squatted msgID and a forged advisory. Each is refused, and the refusal shows: in
// the coordinator's log, in `dwcp status`/`dwcp events`, or as a typed error.
const MiB = 1024 * 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;

beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(async () => stack?.cleanup());

const signerOf = (role: Role): EventSigner => {
  const creds = stack.credentials.roles.get(role);
  if (!creds) throw new Error(`no credentials for ${role}`);
  return EventSigner.fromSeedFile(creds.nkeyFile);
};
/** A store that appends as `signer` (or unsigned) and reads with the stack's trust file. */
const storeAs = (signer?: EventSigner): EventStore => {
  const trust: EventTrust = signer
    ? { insecure: false, signer, verifier: EventVerifier.fromTrustFile(stack.credentials.trustFile) }
    : INSECURE;
  return new EventStore(stack.nats.js, stack.nats.jsm, { trust });
};

/** Resolves with the first line of a service's log that matches, as the service writes it. */
async function logged(service: string, match: RegExp, timeoutMs = 20_000): Promise<string> {
  const file = join(stack.opts.dataDir, "logs", `${service}.log`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = readFileSync(file, "utf8")
      .split("\n")
      .find((l) => match.test(l));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`${service} never logged ${match}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const cli = (args: string[]) =>
  spawnSync(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...stack.env("cli") },
    encoding: "utf8",
    timeout: 120_000, // generous: the machine may be loaded
  });

const at = () => new Date().toISOString();

describe("events you can trust", () => {
  it("a hand-written history, unsigned or signed by a key not in trust.json, leaves dwcp status as is", async () => {
    const stranger = new EventSigner(createUser());
    for (const [id, signer] of [
      ["forged-unsigned", undefined],
      ["forged-stranger", stranger],
    ] as const) {
      const store = signer
        ? new EventStore(stack.nats.js, stack.nats.jsm, { trust: { insecure: false, signer } })
        : storeAs();
      await store.append(id, forgedHistory(id, "a", "b"), `${id}.h`);
      const status = cli(["status", id, "--json"]);
      expect(status.status, status.stderr).toBe(0);
      const row = JSON.parse(status.stdout) as { state: string; bytesDone: number; ignored?: { count: number } };
      expect(row.state).toBe("none");
      expect(row.bytesDone).toBe(0);
      expect(row.ignored?.count).toBe(2);
      const events = cli(["events", id]);
      expect(events.stdout).toMatch(signer ? /ignored: unverified: unknown signer/ : /ignored: unverified: unsigned/);
      // The coordinator did not take it either: it logged the refusal with subject and sequence.
      const line = await logged("coordinator-0", new RegExp(`"subject":"dwcp.evt.migration.${id}"`));
      expect(line).toMatch(/event ignored/);
      expect(line).toMatch(/"streamSeq":\d+/);
    }
    expect(cli(["status", "--json"]).stdout).not.toMatch(/"state":"completed"/);
  });

  it("a ChunkBatchTransferred signed by the wrong mover or the cli key does not make it finalize", async () => {
    const src = await makeImage(stack, "a", "vms/slow/disk.img", { sizeBytes: 8 * MiB, zeroFraction: 0, seed: 7 });
    const command = buildStart({
      vm: "slow",
      migrationId: "slow-1",
      source: { host: "a", volumes: [{ path: "vms/slow/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "in/slow" },
      // 8 batches at 4 MiB/s: time enough for the forgeries to land before the real transfers.
      options: { chunkSizeBytes: MiB, batchSizeBytes: MiB, verify: false, bandwidthLimitBytesPerSec: 4 * MiB },
    });
    const run = runMigration(stack.nats, command, { timeoutMs: 60_000 });
    const planned = await waitForEvent(stack, "slow-1", (e) => e.event.type === "MigrationPlanned");
    const batchCount = planned.event.type === "MigrationPlanned" ? planned.event.batchCount : 0;
    const forge = (batch: number, host: string): MigrationEvent => ({
      type: "ChunkBatchTransferred",
      migrationId: "slow-1",
      at: at(),
      version: 1,
      batch,
      attempt: 0,
      host,
      chunks: [{ offset: batch * MiB, length: MiB, crc32c: 0, zero: true, wireBytes: 0 }],
      bytes: MiB,
      wireBytes: 0,
      durationMs: 1,
    });
    for (let b = 0; b < batchCount; b++) {
      await storeAs(signerOf("mover-b")).append("slow-1", [forge(b, "a")], `forge-b.${b}`);
      await storeAs(signerOf("cli")).append("slow-1", [forge(b, "a")], `forge-cli.${b}`);
    }
    const r = await run;
    expect(r.state).toBe("completed");
    // Completed after every batch had its real transfer from mover a, with the real bytes.
    expect(await sha256File(join(stack.root("b"), "in/slow/disk.img"))).toBe(await sha256File(src));
    const events = cli(["events", "slow-1", "--json"]);
    const list = JSON.parse(events.stdout) as Array<{ type: string; seq: number; ignored?: string }>;
    const ignored = list.filter((e) => e.ignored !== undefined);
    expect(ignored).toHaveLength(2 * batchCount);
    expect(ignored.map((e) => e.ignored)).toContain("mover-b may not report batches assigned to host a");
    expect(ignored.map((e) => e.ignored)).toContain("cli may not report batches assigned to host a");
    const done = list.findIndex((e) => e.type === "MigrationCompleted");
    const real = list.filter((e, i) => e.type === "ChunkBatchTransferred" && !e.ignored && i < done);
    expect(real).toHaveLength(batchCount);
    await logged("coordinator-0", /"subject":"dwcp.evt.migration.slow-1".*mover-b may not report/);
  });

  it("msgIDs are keyed: junk under <id> and <id>.plan squats nothing; a squatted keyed id is detected", async () => {
    // Junk on another subject under every dedup id the coordinator used to derive from the ids alone.
    for (const msgID of ["squat-1", "c-squat-1", "squat-1.plan", "squat-1.finalize"])
      await stack.nats.js.publish(subjects.migration("junk"), "junk", { msgID });
    const img = await makeImage(stack, "a", "vms/sq/disk.img", { sizeBytes: 2 * MiB, zeroFraction: 0.5, seed: 3 });
    const command = buildStart({
      vm: "sq",
      migrationId: "squat-1",
      source: { host: "a", volumes: [{ path: "vms/sq/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "in/sq" },
      options: {},
    });
    expect((await runMigration(stack.nats, command, { timeoutMs: 60_000 })).state).toBe("completed");
    expect(await sha256File(join(stack.root("b"), "in/sq/disk.img"))).toBe(await sha256File(img));
    // Someone holding the coordinator's msgID (here: computed from its seed) publishes first.
    const keyed = signerOf("coordinator").msgId("c-squat-2");
    await stack.nats.js.publish(subjects.migration("elsewhere"), "junk", { msgID: keyed });
    const squatted = { ...command, vm: "sq2", migrationId: "squat-2", commandId: "c-squat-2" };
    void runMigration(stack.nats, squatted, { timeoutMs: 5_000 }).catch(() => undefined);
    const line = await logged("coordinator-0", /DEDUP_ID_SQUATTED/);
    expect(line).toMatch(/c-squat-2\.k/);
  });

  it("a forged max-deliveries advisory naming an event does not delete it", async () => {
    const [first] = await eventsOf(stack, "slow-1");
    if (!first) throw new Error("no events of slow-1");
    const advisory = { stream: EVT_STREAM, stream_seq: first.seq, deliveries: 8 };
    stack.nats.nc.publish(`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${EVT_STREAM}.mover`, JSON.stringify(advisory));
    await logged("coordinator-0", /max-deliveries advisory ignored: not a work stream/);
    const still = await stack.nats.jsm.streams.getMessage(EVT_STREAM, { seq: first.seq });
    expect(still?.subject).toBe(subjects.migration("slow-1"));
  });

  it("a forged SnapshotCommitted does not pick the store a restore reads", async () => {
    await stack.startReplication("b");
    const forged = (snapshotId: string) => ({
      type: "SnapshotCommitted" as const,
      vm: "vmx",
      at: at(),
      version: 1 as const,
      snapshotId,
      takenAt: at(),
      source: { host: "a", paths: ["disk.img"] },
      destination: { host: "b", store: "/tmp/evil-store" },
      manifest: "manifests/x.json",
      manifestBlake3: "0".repeat(64),
      volumes: [{ name: "disk.img", sizeBytes: MiB, chunkCount: 1 }],
      bytes: MiB,
      changedBytes: MiB,
      wireBytes: MiB,
      durationMs: 1,
    });
    // Not a migration event: published as the replication log would, signed by the wrong roles.
    for (const [role, id] of [
      ["replication-b", "s-wrong-host"],
      ["cli", "s-cli"],
    ] as const) {
      const signer = signerOf(role);
      const msgID = signer.msgId(`forged-${id}`);
      const data = new TextEncoder().encode(JSON.stringify(forged(id)));
      const subject = "dwcp.evt.replication.vmx";
      const h = natsHeaders();
      for (const [k, v] of signer.sign(subject, msgID, data)) h.set(k, v);
      await stack.nats.js.publish(subject, data, { msgID, headers: h });
    }
    const r = cli(["restore", "--vm", "vmx", "--snapshot", "s-wrong-host", "--to", "b:restored-vmx"]);
    expect(r.status).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/SNAPSHOT_NOT_FOUND|no snapshot|not found/i);
    const line = await logged("replication-b", /"subject":"dwcp.evt.replication.vmx".*replication-b may not commit/);
    expect(line).toMatch(/event ignored/);
  });

  it("signatures survive backup and restore-log: the history folds the same, forgeries still ignored", async () => {
    const file = join(stack.opts.dataDir, "events.backup");
    const key = await loadSigningKey(join(stack.opts.dataDir, "creds", "admin.nk"));
    await backupWith(stack.nats, { out: file, key });
    const server = await startNatsServer({ storeDir: join(stack.opts.dataDir, "restored-nats") });
    const restored = await connectNats(server.url, "restored");
    try {
      await ensureLayout(restored.nc, restored.jsm, { replicas: 1 });
      // The log holds the junk earlier attacks wrote: restore-log leaves it out only when asked.
      const trust = trustFromTrustFile(stack.credentials.trustFile);
      await expect(restoreLogWith(restored, { in: file, trust })).rejects.toThrow(/invalid/);
      const r = await restoreLogWith(restored, { in: file, trust, skipInvalid: true });
      expect(r.skipped).toBeGreaterThan(0);
      const evTrust: EventTrust = {
        insecure: false,
        verifier: EventVerifier.fromTrustFile(stack.credentials.trustFile),
      };
      const events = await new EventStore(restored.js, restored.jsm, { trust: evTrust }).read("slow-1");
      const original = await storeAs(signerOf("cli")).read("slow-1");
      expect(events.map((e) => e.provenance)).toEqual(original.map((e) => e.provenance));
      expect(events.filter((e) => e.provenance?.kind === "signed").length).toBe(events.length);
      const state = foldTrusted("slow-1", events);
      expect(state.status).toBe("completed");
      expect(state.ignored?.count).toBe(foldTrusted("slow-1", original).ignored?.count);
    } finally {
      await restored.nc.close();
      await server.stop();
    }
  });

  it("dwcp replay and snapshots fold by the producer rules; replay --backup checks the file's signature", async () => {
    // The live log: forged histories and facts stay out of the view, listed with why.
    const live = cli(["replay", "--until", at(), "--json"]);
    expect(live.status, live.stderr).toBe(0);
    const view = JSON.parse(live.stdout) as ReplayView;
    const byId = new Map(view.migrations.map((m) => [m.id, m]));
    for (const id of ["forged-unsigned", "forged-stranger"]) {
      expect(byId.get(id)?.status).toBe("none");
      expect(byId.get(id)?.ignored?.count).toBe(2);
    }
    expect(byId.get("slow-1")?.status).toBe("completed");
    const forgedBatches = byId.get("slow-1")?.ignored?.count ?? 0;
    expect(forgedBatches).toBeGreaterThan(0);
    expect(view.ignored.count).toBeGreaterThanOrEqual(4 + forgedBatches + 2);
    const reasons = view.ignored.recent.map((i) => `${i.aggregate} ${i.id}: ${i.reason}`);
    expect(reasons).toContain("replication vmx: replication-b may not commit snapshots of host a");
    expect(reasons).toContain("replication vmx: cli may not commit snapshots of host a");
    expect(view.replications.find((r) => r.vm === "vmx")?.snapshots ?? []).toEqual([]);
    const text = cli(["replay", "--until", at()]);
    expect(text.stdout).toMatch(/ignored: \d+ event\(s\) whose producer may not make them/);

    // dwcp snapshots: the forged SnapshotCommitted events are not snapshots, and it says so.
    const snaps = cli(["snapshots", "--vm", "vmx"]);
    expect(snaps.status, snaps.stderr).toBe(0);
    expect(snaps.stdout).toMatch(/no snapshots of vmx/);
    expect(snaps.stderr).toMatch(/ignored 2 event\(s\) of vmx/);
    expect(snaps.stderr).toMatch(/replication-b may not commit snapshots of host a/);

    // A backup signed with the stack's admin key replays (checked against trust.json's admin key)
    // to the same verdicts; one signed by another key is refused, whatever its digest says.
    const file = join(stack.opts.dataDir, "events.backup");
    const fromFile = cli(["replay", "--backup", file, "--json"]);
    expect(fromFile.status, fromFile.stderr).toBe(0);
    const fileView = JSON.parse(fromFile.stdout) as ReplayView;
    expect(fileView.migrations.find((m) => m.id === "forged-unsigned")?.status).toBe("none");
    expect(fileView.migrations.find((m) => m.id === "slow-1")?.ignored?.count).toBe(forgedBatches);
    const foreign = join(stack.opts.dataDir, "foreign.backup");
    const strangerKey = signingKeyFromSeed(new TextDecoder().decode(createUser().getSeed()));
    await backupWith(stack.nats, { out: foreign, key: strangerKey });
    const refused = cli(["replay", "--backup", foreign, "--json"]);
    expect(refused.status).not.toBe(0);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toMatch(/BACKUP_SIGNER_UNTRUSTED|not by the trusted key/);
  });

  it("a coordinator without a signing key and trust file refuses to start", () => {
    const env = { ...process.env, DWCP_NKEY_FILE: "", DWCP_TRUST_FILE: "", DWCP_EVENTS_UNSIGNED: "" };
    const r = spawnSync(process.execPath, [BIN, "coordinator", "--nats", stack.url], {
      env,
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(r.status).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/DWCP_NKEY_FILE/);
  });
});
