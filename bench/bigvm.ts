// npm run bench:bigvm [-- --json] [--disk-size 100G] [--mem-size 8G] [--data-fraction 0.1]
//                     [--batch-size 1G] [--chunk-size 4M] [--compression auto] [--dwcp-only]
//                     [--prof DIR] [--warm] [--keep]
// The seed's VM: an 8 GiB memory image (dense, about 40% zero pages, the rest a text/binary mix)
// and a 100 GiB sparse disk image (about 10% data in extents of 64 KiB-64 MiB spread over it, a
// text/binary mix), moved a → b through the embedded stack (`dwcp up`'s: own nats-server with
// mTLS, coordinator, a mover per host, TLS data channel) and checked byte for byte wherever either
// side holds data. In the same run, the same two files are copied with `cp --sparse=always` and
// with `rsync -W --sparse`, each followed by `sync` (dwcp makes every batch durable before it
// reports it), and cp's copy is then read back from the disk (O_DIRECT, its data only): cp + sync
// + that read-back is a durable, verified copy in two passes, the floor dwcp's time is set
// against (`verified_floor_s`; dwcp overlaps its read-back with the next batch). Each tool
// starts from the same state: dirty pages written back and the source files dropped from the
// page cache (POSIX_FADV_DONTNEED on those files only; --warm keeps them
// cached instead). dwcp's time runs from publishing StartMigration to MigrationCompleted
// (planning, every batch fsynced, the read-back verify). Every copy is removed after its step and
// the images at the end (--keep keeps the data dir). --prof DIR writes a --cpu-prof profile of
// every service into DIR.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parseSize } from "../cli/args.js";
import { buildStart, runMigration } from "../cli/migrate.js";
import { Stack } from "../cli/stack.js";
import { EventStore } from "#common/event-store.js";
import { CompressionMode } from "#schemas/index.js";
import { cpuSeconds, peakRssBytes } from "./lib-transfer.js";
import {
  allocatedBytes,
  compareFiles,
  dropFromCache,
  generateDisk,
  generateMemory,
  readBackData,
} from "./support/bigvm.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    "disk-size": { type: "string", default: "100G" },
    "mem-size": { type: "string", default: "8G" },
    "data-fraction": { type: "string", default: "0.1" },
    /** Data bytes per batch (one work item, one fsync, one event). */
    "batch-size": { type: "string", default: "1G" },
    /** Bytes per chunk (default the product's 4 MiB): a batch sized by data holds at most 4096 chunks, holes too. */
    "chunk-size": { type: "string" },
    /** The migration's compression mode (auto, none, lz4, zstd); default the product's (auto). */
    compression: { type: "string" },
    prof: { type: "string" },
    warm: { type: "boolean", default: false },
    /** Only dwcp (no cp or rsync baselines): the growth table's runs. */
    "dwcp-only": { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
  },
});
const diskSize = parseSize("--disk-size", values["disk-size"]);
const memSize = parseSize("--mem-size", values["mem-size"]);
const batchSize = parseSize("--batch-size", values["batch-size"]);
const chunkSize = values["chunk-size"] === undefined ? undefined : parseSize("--chunk-size", values["chunk-size"]);
const dataFraction = Number(values["data-fraction"]);
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const load = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
const GiB = 2 ** 30;

function timedShell(script: string): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync("bash", ["-c", script], { stdio: "inherit" });
  if (r.status !== 0) throw new Error(`${script} failed (${r.status})`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function main(): Promise<void> {
  if (!(dataFraction > 0 && dataFraction <= 1)) throw new Error(`--data-fraction must be in (0, 1]`);
  if (spawnSync("rsync", ["--version"]).status !== 0) throw new Error("rsync missing: apt-get install -y rsync");
  const dataDir = mkdtempSync(join(tmpdir(), "dwcp-bench-bigvm-"));
  const env = values.prof ? { DWCP_NODE_FLAGS: `--cpu-prof --cpu-prof-dir=${resolve(values.prof)}` } : {};
  const stack = new Stack({ dataDir, hosts: ["a", "b"], replication: false, env });
  const loadAtStart = load();
  try {
    await stack.start();
    const srcDir = join(stack.root("a"), "vms/bigvm");
    mkdirSync(srcDir, { recursive: true });
    const disk = join(srcDir, "disk.img");
    const mem = join(srcDir, "mem.img");
    let t0 = performance.now();
    log(`generating a ${values["disk-size"]} sparse disk at ${dataFraction * 100}% data...`);
    const d = await generateDisk(disk, { sizeBytes: diskSize, dataFraction, seed: 2026 });
    const withMemory = memSize > 0;
    if (withMemory) log(`generating a ${values["mem-size"]} memory image (40% zero pages)...`);
    const m = withMemory
      ? await generateMemory(mem, { sizeBytes: memSize, zeroFraction: 0.4, seed: 8 })
      : { dataBytes: 0 };
    log(`generated in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${d.extents} disk extents`);
    const dataBytes = d.dataBytes + m.dataBytes;
    const files = withMemory ? ["disk.img", "mem.img"] : ["disk.img"];
    const sources = files.map((f) => join(srcDir, f));
    const prepare = (): void => (values.warm ? void execFileSync("sync") : dropFromCache(sources));

    // dwcp a → b
    prepare();
    const loadDwcp = load();
    const command = buildStart({
      vm: "bigvm",
      source: {
        host: "a",
        volumes: files.map((f) => ({ path: `vms/bigvm/${f}`, kind: f === "mem.img" ? "memory" : "disk" })),
      },
      destination: { host: "b", dir: "in" },
      options: {
        batchSizeBytes: batchSize,
        ...(chunkSize === undefined ? {} : { chunkSizeBytes: chunkSize }),
        ...(values.compression === undefined ? {} : { compression: CompressionMode.parse(values.compression) }),
      },
    });
    const pid = (p: { child: { pid?: number } } | undefined): number => p?.child.pid ?? 0;
    const services = [stack.movers.get("a"), stack.movers.get("b"), stack.coordinators[0]].map(pid);
    const cpu0 = await Promise.all(services.map(cpuSeconds));
    const r = await runMigration(stack.nats, command, { progress: !values.json, timeoutMs: 3_600_000 });
    const cpu1 = await Promise.all(services.map(cpuSeconds));
    const [cpuA, cpuB, cpuCoordinator] = cpu1.map((c, i) => c - (cpu0[i] ?? 0));
    if (r.state !== "completed") throw new Error(`migration ${r.state}: ${r.reason} ${r.message}`);
    const stored = await new EventStore(stack.nats.js, stack.nats.jsm).read(r.migrationId);
    const events = stored.length;
    const eventTypes: Record<string, number> = {};
    for (const e of stored) eventTypes[e.event.type] = (eventTypes[e.event.type] ?? 0) + 1;
    const moverRssA = await peakRssBytes(pid(stack.movers.get("a")));
    const moverRssB = await peakRssBytes(pid(stack.movers.get("b")));
    const moverRss = Math.max(moverRssA, moverRssB);
    const coordinatorRss = await peakRssBytes(pid(stack.coordinators[0]));
    const inDir = join(stack.root("b"), "in");
    t0 = performance.now();
    for (const f of files) {
      const diff = await compareFiles(join(srcDir, f), join(inDir, f));
      if (diff !== undefined) throw new Error(`dwcp's ${f} differs from the source: ${diff}`);
    }
    let dwcpAllocated = 0;
    for (const f of files) dwcpAllocated += await allocatedBytes(join(inDir, f));
    log(`verified both images in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    rmSync(inDir, { recursive: true });

    const dwcpOnly = values["dwcp-only"];
    const quoted = sources.map((s) => `'${s}'`).join(" ");
    // cp --sparse=always + sync
    const cpDir = join(dataDir, "cp");
    mkdirSync(cpDir);
    if (!dwcpOnly) prepare();
    const loadCp = load();
    const cp_sync_s = dwcpOnly
      ? Number.NaN
      : timedShell(`cp --sparse=always ${quoted} '${cpDir}/' && sync -f '${cpDir}/disk.img'`);
    let cpAllocated = 0;
    if (!dwcpOnly) for (const f of files) cpAllocated += await allocatedBytes(join(cpDir, f));
    // The copy read back from the disk (O_DIRECT, its data only): with cp + sync, the floor of a
    // durable, verified copy done in two passes on this disk.
    let read_back_s = Number.NaN;
    if (!dwcpOnly) {
      t0 = performance.now();
      let readBack = 0;
      for (const f of files) readBack += await readBackData(join(cpDir, f));
      read_back_s = (performance.now() - t0) / 1000;
      if (readBack !== dataBytes) log(`read back ${readBack} bytes of the copy, not ${dataBytes}`);
    }
    rmSync(cpDir, { recursive: true });

    // rsync -W --sparse + sync
    const rsDir = join(dataDir, "rsync");
    mkdirSync(rsDir);
    if (!dwcpOnly) prepare();
    const loadRsync = load();
    const rsync_sync_s = dwcpOnly
      ? Number.NaN
      : timedShell(`rsync --whole-file --sparse ${quoted} '${rsDir}/' && sync -f '${rsDir}/disk.img'`);
    rmSync(rsDir, { recursive: true });

    const dwcp_s = r.seconds;
    const result = {
      disk_bytes: diskSize,
      memory_bytes: memSize,
      data_bytes: dataBytes,
      disk_extents: d.extents,
      batch_size_bytes: batchSize,
      chunk_size_bytes: chunkSize ?? 4 * 2 ** 20,
      compression: values.compression ?? "auto",
      cache: values.warm ? "warm" : "cold",
      dwcp_s,
      cp_sync_s,
      rsync_sync_s,
      ratio_vs_rsync_sync: rsync_sync_s / dwcp_s,
      ratio_vs_cp_sync: dwcp_s / cp_sync_s,
      read_back_s,
      verified_floor_s: cp_sync_s + read_back_s,
      ratio_vs_verified_floor: dwcp_s / (cp_sync_s + read_back_s),
      mover_peak_rss_bytes: moverRss,
      mover_a_peak_rss_bytes: moverRssA,
      mover_b_peak_rss_bytes: moverRssB,
      coordinator_peak_rss_bytes: coordinatorRss,
      events,
      event_types: eventTypes,
      events_per_gib_of_data: events / (dataBytes / GiB),
      cpu_s: { mover_a: cpuA, mover_b: cpuB, coordinator: cpuCoordinator },
      wire_bytes: r.wireBytes,
      zero_bytes: r.zeroBytes,
      dwcp_allocated_bytes: dwcpAllocated,
      cp_allocated_bytes: cpAllocated,
      load: { start: loadAtStart, dwcp: loadDwcp, cp_sync: loadCp, rsync_sync: loadRsync, end: load() },
      machine: `${cpus().length} vCPU ${cpus()[0]?.model ?? "unknown"}`,
    };
    log(
      `\ndwcp ${dwcp_s.toFixed(3)} s, cp+sync ${cp_sync_s.toFixed(3)} s, rsync+sync ${rsync_sync_s.toFixed(3)} s; ` +
        `rsync+sync/dwcp ${result.ratio_vs_rsync_sync.toFixed(2)}x (target >= 4), dwcp/cp+sync ` +
        `${result.ratio_vs_cp_sync.toFixed(2)}x (target <= 1.25); cp+sync+read-back ` +
        `${result.verified_floor_s.toFixed(3)} s, dwcp/that ${result.ratio_vs_verified_floor.toFixed(2)}x; ` +
        `peak RSS mover ${(moverRss / 2 ** 20).toFixed(1)} MiB, ` +
        `coordinator ${(coordinatorRss / 2 ** 20).toFixed(1)} MiB; ${events} events for ` +
        `${(dataBytes / GiB).toFixed(2)} GiB of data`,
    );
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await stack.stop();
    if (!values.keep) rmSync(dataDir, { recursive: true, force: true });
    else log(`kept ${dataDir}`);
  }
}

main().catch((err: unknown) => {
  log(`bench:bigvm failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
