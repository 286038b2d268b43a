// npm run bench:replay [-- --events 1000000] [--server-events 100000] [--size 2G] [--keep]
// 1. Fold rate: `events` migration events (Requested, Planned, 48 ChunkBatchTransferred of 16
//    chunks each, Completed per migration) are written as a `dwcp backup` file and folded by
//    replayBackup: parse, zod-validate, evolve. The file is generated directly because publishing
//    a million events into nats-server on 2 shared cores takes minutes (8-14k
//    publishes/s); the live-stream rate is measured separately on `server-events` published with
//    pipelined acks and read back by replay() through an ordered consumer.
// 2. Restore throughput: a random image of `size` is synced into a store, `sync(1)` flushes the
//    writeback that left behind, and the restore (every chunk read, BLAKE3-verified, written
//    sparse, fsynced) is timed end to end.
// Last line: JSON {fold_events_per_s, server_events_per_s, restore_gb_per_s, ...}.
import { execFileSync, spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createUser } from "@nats-io/nkeys";
import { parseSize } from "../cli/args.js";
import type { MigrationEvent } from "#schemas/index.js";
import { BACKUP_FORMAT } from "#schemas/replication.js";
import { ensureLayout, EVT_STREAM } from "#common/layout.js";
import { connectNats, type Nats } from "#common/nats.js";
import { startNatsServer } from "#common/nats-server.js";
import { DestinationAgent, inProcess } from "../services/replication/src/app/destination.js";
import { replayBackup, replayWith } from "../services/replication/src/app/replay.js";
import { pickSnapshot, restoreFromStore } from "../services/replication/src/app/restore.js";
import { syncOnce } from "../services/replication/src/app/sync.js";
import { encodePayload } from "../services/replication/src/domain/backup/format.js";
import { BackupWriter } from "../services/replication/src/infra/backup-file.js";
import { signingKeyFromSeed } from "../services/replication/src/infra/backup-signing.js";
import { ReplicationLog } from "../services/replication/src/infra/replication-log.js";

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "1000000" },
    "server-events": { type: "string", default: "100000" },
    size: { type: "string", default: "2G" },
    keep: { type: "boolean", default: false },
    /** Accepted for symmetry with the other benches: the last line is always JSON. */
    json: { type: "boolean", default: false },
  },
});
const log = (s: string): boolean => process.stderr.write(`${s}\n`);
const BATCHES = 48;
const at = "2026-11-26T00:00:00.000Z";

/** Events of migration `i`, in order: 51 per migration. */
function* migrationEvents(i: number): Generator<MigrationEvent> {
  const migrationId = `m${i}`;
  yield {
    type: "MigrationRequested",
    version: 1,
    migrationId,
    at,
    commandId: `c${i}`,
    vm: `vm${i % 100}`,
    source: { host: "a", volumes: [{ path: "d.img", kind: "disk" }] },
    destination: { host: "b", dir: "in" },
    options: { chunkSizeBytes: 1 << 20, batchSizeBytes: 16 << 20, verify: true },
  };
  yield {
    type: "MigrationPlanned",
    version: 1,
    migrationId,
    at,
    destDir: "/b/in",
    chunkSizeBytes: 1 << 20,
    chunksPerBatch: 16,
    volumes: [
      {
        index: 0,
        kind: "disk",
        sourcePath: "/a/d.img",
        destName: "d.img",
        sizeBytes: BATCHES << 24,
        chunkCount: BATCHES * 16,
        firstBatch: 0,
        batchCount: BATCHES,
      },
    ],
    totalBytes: BATCHES << 24,
    chunkCount: BATCHES * 16,
    batchCount: BATCHES,
  };
  for (let b = 0; b < BATCHES; b++) {
    const chunks = Array.from({ length: 16 }, (_, c) => ({
      offset: (b * 16 + c) << 20,
      length: 1 << 20,
      crc32c: (b * 31 + c) >>> 0,
      zero: c % 5 === 0,
      wireBytes: 1 << 19,
    }));
    yield {
      type: "ChunkBatchTransferred",
      version: 1,
      migrationId,
      at,
      batch: b,
      attempt: 0,
      host: "a",
      chunks,
      bytes: 16 << 20,
      wireBytes: 8 << 20,
      durationMs: 12,
    };
  }
  yield {
    type: "MigrationCompleted",
    version: 1,
    migrationId,
    at,
    totals: { bytes: BATCHES << 24, zeroBytes: 0, wireBytes: 0, chunks: BATCHES * 16, batches: BATCHES },
    durationMs: 900,
    volumes: [{ index: 0, destPath: "/b/in/d.img", sizeBytes: BATCHES << 24, crc32c: 1 }],
  };
}

function* allEvents(n: number): Generator<[string, MigrationEvent]> {
  let k = 0;
  for (let i = 0; ; i++)
    for (const e of migrationEvents(i)) {
      if (k++ >= n) return;
      yield [`dwcp.evt.migration.m${i}`, e];
    }
}

async function foldRate(dir: string, n: number): Promise<{ perSec: number; seconds: number; migrations: number }> {
  const file = join(dir, "events.backup");
  const key = signingKeyFromSeed(new TextDecoder().decode(createUser().getSeed()));
  const w = await BackupWriter.create(
    file,
    {
      format: BACKUP_FORMAT,
      createdAt: at,
      streams: [{ name: EVT_STREAM, config: {}, firstSeq: 1, lastSeq: n, messages: n }],
    },
    key,
  );
  let seq = 0;
  const t0 = BigInt(Date.parse(at)) * 1_000_000n;
  for (const [subject, e] of allEvents(n)) {
    seq++;
    await w.message({
      stream: EVT_STREAM,
      seq,
      ts: (t0 + BigInt(seq) * 1000n).toString(),
      subject,
      ...encodePayload(Buffer.from(JSON.stringify(e))),
    });
  }
  await w.commit();
  const t = performance.now();
  const session = process.env["DWCP_BENCH_PROFILE"] ? await startProfile() : undefined;
  const view = await replayBackup(file, { backupTrust: { alg: "ed25519", publicKey: key.publicKey } });
  const seconds = (performance.now() - t) / 1000;
  await session?.();
  if (view.events !== n) throw new Error(`folded ${view.events} of ${n}`);
  return { perSec: n / seconds, seconds, migrations: view.migrations.length };
}

async function serverRate(nats: Nats, n: number): Promise<number> {
  const enc = new TextEncoder();
  const inflight: Array<Promise<unknown>> = [];
  for (const [subject, e] of allEvents(n)) {
    inflight.push(nats.js.publish(subject, enc.encode(JSON.stringify(e))));
    if (inflight.length >= 1024) await inflight.shift();
  }
  await Promise.all(inflight);
  const t = performance.now();
  const view = await replayWith(nats);
  const seconds = (performance.now() - t) / 1000;
  if (view.events !== n) throw new Error(`replayed ${view.events} of ${n}`);
  return n / seconds;
}

async function restoreRate(
  dir: string,
  nats: Nats,
  size: number,
): Promise<{
  gbPerSec: number;
  seconds: number;
  finalSyncSeconds: number;
  ddGbPerSec: number;
  ddDirectGbPerSec: number;
}> {
  mkdirSync(join(dir, "a"), { recursive: true });
  const src = join(dir, "a", "disk.img");
  const fh = await open(src, "w");
  const buf = Buffer.allocUnsafe(8 << 20);
  for (let off = 0; off < size; off += buf.length)
    await fh.write(randomFillSync(buf), 0, Math.min(buf.length, size - off), off);
  await fh.close();
  const agent = await DestinationAgent.open(join(dir, "b", ".dwcp-store"));
  const replLog = new ReplicationLog(nats);
  await syncOnce({
    vm: "bench",
    sources: [src],
    sourceHost: "a",
    destinationHost: "b",
    storePath: agent.store.dir,
    transport: inProcess(agent),
    log: replLog,
    stateDir: join(dir, "a", ".repl"),
  });
  const snap = pickSnapshot((await replLog.read("bench")).state, {});
  execFileSync("sync"); // the sync left ~size of dirty pages: do not bill their writeback to the restore
  const r = await restoreFromStore(snap, { vm: "bench", toDir: join(dir, "restored") });
  // The disk's own bounds, measured right after: dd writing the same bytes through the page cache
  // (conv=fdatasync) and straight to the disk (oflag=direct, as the restore's large runs are).
  const dd = (...flags: string[]): number => {
    const out = spawnSync(
      "dd",
      [`if=${join(dir, "restored", "disk.img")}`, `of=${join(dir, "dd.out")}`, "bs=4M", "conv=fdatasync", ...flags],
      { encoding: "utf8" },
    );
    rmSync(join(dir, "dd.out"), { force: true });
    return size / Number(/copied, ([\d.]+) s/.exec(out.stderr)?.[1] ?? "NaN") / 1e9;
  };
  return {
    gbPerSec: r.bytes / r.seconds / 1e9,
    seconds: r.seconds,
    finalSyncSeconds: r.finalSyncSeconds,
    ddGbPerSec: dd(),
    ddDirectGbPerSec: dd("oflag=direct"),
  };
}

/** DWCP_BENCH_PROFILE=FILE: a CPU profile of the fold alone, for chrome://inspect. */
async function startProfile(): Promise<() => Promise<void>> {
  const { Session } = await import("node:inspector/promises");
  const { writeFileSync } = await import("node:fs");
  const s = new Session();
  s.connect();
  await s.post("Profiler.enable");
  await s.post("Profiler.start");
  return async () => {
    const { profile } = await s.post("Profiler.stop");
    writeFileSync(process.env["DWCP_BENCH_PROFILE"] ?? "fold.cpuprofile", JSON.stringify(profile));
    s.disconnect();
  };
}

const dir = mkdtempSync(join(tmpdir(), "dwcp-bench-replay-"));
const server = await startNatsServer({ storeDir: join(dir, "nats") });
const nats = await connectNats(server.url, "bench-replay");
try {
  await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
  const fold = await foldRate(dir, Number(values.events));
  log(
    `fold from backup file: ${Math.round(fold.perSec)} events/s ` +
      `(${values.events} events, ${fold.migrations} migrations, ${fold.seconds.toFixed(2)} s)`,
  );
  const srv = await serverRate(nats, Number(values["server-events"]));
  log(`replay from nats-server: ${Math.round(srv)} events/s (${values["server-events"]} events)`);
  const restore = await restoreRate(dir, nats, parseSize("--size", values.size));
  log(
    `restore ${values.size}: ${restore.gbPerSec.toFixed(2)} GB/s ` +
      `(${restore.seconds.toFixed(2)} s, of which final fsync ${restore.finalSyncSeconds.toFixed(2)} s); ` +
      `dd of the same bytes ${restore.ddGbPerSec.toFixed(2)} GB/s through the page cache, ` +
      `${restore.ddDirectGbPerSec.toFixed(2)} GB/s with oflag=direct`,
  );
  const summary = {
    events: Number(values.events),
    fold_events_per_s: Math.round(fold.perSec),
    server_events: Number(values["server-events"]),
    server_events_per_s: Math.round(srv),
    restore_bytes: parseSize("--size", values.size),
    restore_s: restore.seconds,
    restore_final_fsync_s: restore.finalSyncSeconds,
    restore_gb_per_s: restore.gbPerSec,
    dd_fdatasync_gb_per_s: restore.ddGbPerSec,
    dd_direct_gb_per_s: restore.ddDirectGbPerSec,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} finally {
  await nats.nc.close();
  await server.stop();
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
}
