import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { afterAll, describe, expect, it } from "vitest";
import { BACKUP_FORMAT } from "#schemas/replication.js";
import { EVT_STREAM } from "#common/layout.js";
import { partitionOf, replayBackup } from "../../services/replication/src/app/replay.js";
import { encodePayload } from "../../services/replication/src/domain/backup/format.js";
import { BackupCorruptError } from "../../services/replication/src/domain/errors.js";
import { BackupWriter } from "../../services/replication/src/infra/backup-file.js";
import { signingKeyFromSeed } from "../../services/replication/src/infra/backup-signing.js";
import { completed, planned, requested, transferred } from "./support.js";

// Backups of 64 MiB and more are digested by a worker thread and folded in aggregate partitions on
// worker threads: the view must be the single thread's, and the same refusals must hold.
describe("large backup files (digest and partitions on worker threads)", () => {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-backup-digest-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("fold as one thread would when intact, and refuse an altered, truncated or broken copy", async () => {
    const file = join(dir, "big.backup");
    const migrations = 40_000; // 5 events of ~400 bytes each: past 64 MiB
    const n = migrations * 5;
    const key = signingKeyFromSeed(new TextDecoder().decode(createUser().getSeed()));
    const w = await BackupWriter.create(
      file,
      {
        format: BACKUP_FORMAT,
        createdAt: new Date().toISOString(),
        streams: [{ name: EVT_STREAM, config: {}, firstSeq: 1, lastSeq: n, messages: n }],
      },
      key,
    );
    let seq = 0;
    for (let i = 0; i < migrations; i++) {
      const id = `m${i}`;
      for (const e of [requested(id, "vm"), planned(id), transferred(id, 0), transferred(id, 1), completed(id)]) {
        seq++;
        await w.message({
          stream: EVT_STREAM,
          seq,
          ts: String(1_764_115_200_000_000_000n + BigInt(seq)),
          subject: `dwcp.evt.migration.${id}`,
          ...encodePayload(Buffer.from(JSON.stringify(e))),
        });
      }
    }
    await w.commit();
    const backupTrust = { alg: "ed25519", publicKey: key.publicKey } as const;
    const good = readFileSync(file);
    expect(good.length).toBeGreaterThan(64 << 20);
    const view = await replayBackup(file, { backupTrust });
    expect(view.events).toBe(n);
    expect(view.migrations.every((m) => m.status === "completed")).toBe(true);
    expect(view).toEqual(await replayBackup(file, { backupTrust }, 1));
    // A bound cuts every partition at the same record.
    const cut = await replayBackup(file, { untilSeq: n / 2 + 3, backupTrust }, 3);
    expect(cut).toEqual(await replayBackup(file, { untilSeq: n / 2 + 3, backupTrust }, 1));
    expect(cut.migrations.filter((m) => m.status !== "completed").map((m) => [m.id, m.status])).toEqual([
      [`m${migrations / 2}`, "running"],
    ]);

    const altered = Buffer.from(good);
    const at = altered.indexOf('"at":"20', altered.length >> 1);
    altered.write("21", at + 6);
    writeFileSync(join(dir, "altered.backup"), altered);
    await expect(replayBackup(join(dir, "altered.backup"), { backupTrust })).rejects.toBeInstanceOf(BackupCorruptError);
    writeFileSync(join(dir, "truncated.backup"), good.subarray(0, Math.floor(good.length * 0.7)));
    await expect(replayBackup(join(dir, "truncated.backup"), { backupTrust })).rejects.toBeInstanceOf(
      BackupCorruptError,
    );

    // A line only one partition parses, broken: the worker's (1) or this thread's (0) names it.
    const lines = good.toString("utf8").split("\n");
    for (const owner of [1, 0]) {
      const k = lines.findIndex(
        (l, i) =>
          i > lines.length / 2 &&
          l.includes('"subject":"dwcp.evt.migration.') &&
          partitionOf(/"subject":"([^"]+)"/.exec(l)?.[1] ?? "", 2) === owner,
      );
      const broken = lines.with(k, `${lines[k]?.slice(0, -1)},}`);
      writeFileSync(join(dir, "broken.backup"), broken.join("\n"));
      await expect(
        replayBackup(join(dir, "broken.backup"), { backupTrust }, 2),
        `owner ${owner}`,
      ).rejects.toMatchObject({
        code: "BACKUP_CORRUPT",
        line: k + 1,
        detail: "not JSON",
      });
    }
  });
});
