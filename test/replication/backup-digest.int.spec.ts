import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BACKUP_FORMAT } from "../../schemas/replication.js";
import { EVT_STREAM } from "../../services/common/layout.js";
import { replayBackup } from "../../services/replication/src/app/replay.js";
import { encodePayload } from "../../services/replication/src/domain/backup/format.js";
import { BackupCorruptError } from "../../services/replication/src/domain/errors.js";
import { BackupWriter } from "../../services/replication/src/infra/backup-file.js";
import { completed, planned, requested, transferred } from "./support.js";

// Backups of 64 MiB and more are digested by a worker thread while the lines are folded: the same
// refusals must hold on that path.
describe("large backup files (digest on a worker thread)", () => {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-backup-digest-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("fold when intact and refuse an altered or truncated copy", async () => {
    const file = join(dir, "big.backup");
    const migrations = 40_000; // 5 events of ~400 bytes each: past 64 MiB
    const n = migrations * 5;
    const w = await BackupWriter.create(file, { format: BACKUP_FORMAT, version: 1, createdAt: new Date().toISOString(), streams: [{ name: EVT_STREAM, config: {}, firstSeq: 1, lastSeq: n, messages: n }] });
    let seq = 0;
    for (let i = 0; i < migrations; i++) {
      const id = `m${i}`;
      for (const e of [requested(id, "vm"), planned(id), transferred(id, 0), transferred(id, 1), completed(id)]) {
        seq++;
        await w.message({ stream: EVT_STREAM, seq, ts: String(1_764_115_200_000_000_000n + BigInt(seq)), subject: `dwcp.evt.migration.${id}`, ...encodePayload(Buffer.from(JSON.stringify(e))) });
      }
    }
    await w.commit();
    const good = readFileSync(file);
    expect(good.length).toBeGreaterThan(64 << 20);
    const view = await replayBackup(file);
    expect(view.events).toBe(n);
    expect(view.migrations.every((m) => m.status === "completed")).toBe(true);

    const altered = Buffer.from(good);
    const at = altered.indexOf('"at":"20', altered.length >> 1);
    altered.write("21", at + 6);
    writeFileSync(join(dir, "altered.backup"), altered);
    await expect(replayBackup(join(dir, "altered.backup"))).rejects.toBeInstanceOf(BackupCorruptError);
    writeFileSync(join(dir, "truncated.backup"), good.subarray(0, Math.floor(good.length * 0.7)));
    await expect(replayBackup(join(dir, "truncated.backup"))).rejects.toBeInstanceOf(BackupCorruptError);
  });
});
