import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { backupWith } from "../../services/replication/src/app/backup.js";
import { replayBackup, replayWith } from "../../services/replication/src/app/replay.js";
import { restoreLogWith } from "../../services/replication/src/app/restore-log.js";
import { BackupCorruptError, RestoreTargetNotEmptyError } from "../../services/replication/src/domain/errors.js";
import { signingKeyFromSeed } from "../../services/replication/src/infra/backup-signing.js";
import { makeImage, startTestStack } from "../support/stack.js";
import { startTestNats, type TestNats } from "./support.js";

const MiB = 1024 * 1024;
// Backups are signed; restore-log trusts only this key's public half.
const key = signingKeyFromSeed(new TextDecoder().decode(createUser().getSeed()));
const trust = { alg: "ed25519", publicKey: key.publicKey } as const;

describe("backup and restore-log", () => {
  let a: Awaited<ReturnType<typeof startTestStack>>;
  let b: TestNats;
  let c: TestNats;
  let file: string;
  beforeAll(async () => {
    [a, b, c] = await Promise.all([startTestStack(), startTestNats(false), startTestNats(true)]);
    file = join(b.dir, "evt.backup");
  });
  afterAll(async () => Promise.all([a?.cleanup(), b?.stop(), c?.stop()]));

  it("round-trips real migrations: the restored log folds to the same state, by time and sequence", async () => {
    await makeImage(a, "a", "vms/v1/disk.img", { sizeBytes: 6 * MiB + 777, zeroFraction: 0.5, seed: 11 });
    const ok = await runMigration(
      a.nats,
      buildStart({
        vm: "v1",
        source: { host: "a", volumes: [{ path: "vms/v1/disk.img", kind: "disk" }] },
        destination: { host: "b", dir: "in/v1" },
        options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 2 * MiB },
      }),
      { timeoutMs: 60_000 },
    );
    expect(ok.state).toBe("completed");
    const bad = await runMigration(
      a.nats,
      buildStart({
        vm: "v2",
        source: { host: "a", volumes: [{ path: "vms/nope.img", kind: "disk" }] },
        destination: { host: "b", dir: "in/v2" },
      }),
      { timeoutMs: 60_000 },
    );
    expect(bad.state).toBe("rejected");

    const summary = await backupWith(a.nats, { out: file, key });
    expect(summary.messages).toBeGreaterThan(5);
    expect(readFileSync(file, "utf8")).toContain('"json":{"type":"MigrationRequested"'); // readable, parsed once
    expect(existsSync(`${file}.tmp`)).toBe(false);
    const restored = await restoreLogWith(b.nats, { in: file, trust });
    expect(restored.messages).toBe(summary.messages);

    const [viewA, viewB] = await Promise.all([replayWith(a.nats), replayWith(b.nats)]);
    expect(viewB).toEqual(viewA);
    expect(viewA.migrations.map((m) => m.status).sort()).toEqual(["completed", "rejected"]);
    const mid = Math.floor(viewA.lastSeq / 2);
    expect(await replayWith(b.nats, { untilSeq: mid })).toEqual(await replayWith(a.nats, { untilSeq: mid }));
    const midTime = viewA.migrations[1]?.requestedAt ?? "";
    expect(await replayWith(b.nats, { untilTime: midTime })).toEqual(await replayWith(a.nats, { untilTime: midTime }));

    // The file folds to the live view, whole or cut, on one thread or in partitions on workers; so
    // does a backup of the restored log, whose positions come from restore-log's headers.
    const fileB = join(b.dir, "restored.backup");
    await backupWith(b.nats, { out: fileB, key });
    for (const [f, partitions] of [
      [file, 1],
      [file, 3],
      [fileB, 2],
    ] as const) {
      expect(await replayBackup(f, { backupTrust: trust }, partitions), `${f} in ${partitions}`).toEqual(viewA);
      expect(await replayBackup(f, { untilSeq: mid, backupTrust: trust }, partitions), `${f} in ${partitions}`).toEqual(
        await replayWith(a.nats, { untilSeq: mid }),
      );
    }

    // A second import into the now non-empty stream is refused.
    await expect(restoreLogWith(b.nats, { in: file, trust })).rejects.toBeInstanceOf(RestoreTargetNotEmptyError);
  });

  it("refuses a truncated or altered backup and imports nothing", async () => {
    const good = readFileSync(file, "utf8");
    const lines = good.split("\n");
    const variants: Record<string, string> = {
      truncated: good.slice(0, Math.floor(good.length * 0.6)),
      "no trailer": lines.slice(0, -2).join("\n") + "\n",
      "altered event": good.replace('"at":"20', '"at":"21'),
      "dropped line": [...lines.slice(0, 2), ...lines.slice(3)].join("\n"),
    };
    for (const [what, text] of Object.entries(variants)) {
      const bad = join(c.dir, `${what.replace(" ", "-")}.backup`);
      writeFileSync(bad, text);
      await expect(restoreLogWith(c.nats, { in: bad, trust }), what).rejects.toBeInstanceOf(BackupCorruptError);
      expect((await c.nats.jsm.streams.info("DWCP_EVT")).state.messages, what).toBe(0);
    }
  });
});
