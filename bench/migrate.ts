// npm run bench:migrate [-- --json] [--size 2G] [--keep] [--skip-random] [--skip-ab]
//                       [--pin] [--tls-only] [--tls-rounds 2] [--repeat N]
//                       [--metrics-ab] [--metrics-rounds 3]
// Migrates a generated VM image through the embedded stack on loopback and, in the same run and on
// the same file, times `cp --sparse=always` and `rsync --whole-file --sparse`. All three run with
// the source in the page cache (it was just written). dwcp's time runs from publishing the command
// to MigrationCompleted, so it includes planning, fsync of every batch and the full verify pass;
// cp and rsync are timed as operators run them (no fsync), and again followed by `sync`.
// The sparse image is also moved within host a (the in-process local copy, no socket).
// --repeat N migrates the realistic image N more times on the same stack, each into a new
// directory of b: the first migration meets services that just started (cold compilers, fresh
// buffers and links), later ones meet them as a long-running deployment's are.
// The same image is then moved by the CLI from the shell (`dwcp migrate --wait`, wall time from
// spawn to exit) against `rsync` + `sync`.
// Second phase: an incompressible random file of the same size, against `rsync --whole-file` and
// a raw sendfile(2) transfer over loopback (bench/lib-transfer.ts), with the sending mover's CPU
// seconds per GB and both movers' peak RSS; then the same dwcp transfer once more with
// `verify: false` (no read-back of the written volume; chunk CRCs are still checked and every
// batch fsynced), to show what the default's read-back costs on this disk; and the disk's own
// durable write of the same bytes (`dd oflag=direct conv=fdatasync`) and the floor of a durable
// verified copy (64 MiB batches written with O_DIRECT and fdatasync while the previous one is read
// back with O_DIRECT).
// The movers run as `dwcp up` runs them: the data channel is a TLS 1.3 mutual-auth handshake and
// bulk data sealed with AES-GCM in native code under keys exported from it (no sendfile). Third
// phase (alone with --tls-only): what TLS costs, measured in the same run: the incompressible
// image a → b with both movers restarted in plaintext (--plaintext-data) and with TLS,
// alternating, --tls-rounds times each. Fourth phase (alone with --metrics-ab): what metrics cost:
// the same transfer with the coordinator and both movers restarted without a metrics listener and
// with one (--metrics-listen) scraped every second, interleaved ABBA, with each round's ratio.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parseSize } from "../cli/args.js";
import { generateImage } from "../cli/image.js";
import { buildStart, runMigration } from "../cli/migrate.js";
import { Stack } from "../cli/stack.js";
import { freePort } from "#common/nats-server.js";
import { initMetrics, metrics, registry, secondsSince } from "#common/metrics/registry.js";
import { DEFAULT_CHUNK_BYTES } from "#schemas/common.js";
import { sha256File } from "../cli/verify.js";
import { generateRandomFile } from "../cli/image.js";
import { cpuSeconds, peakRssBytes, rawSendfile } from "./lib-transfer.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    size: { type: "string", default: "2G" },
    keep: { type: "boolean", default: false },
    "skip-random": { type: "boolean", default: false },
    /** Skip the TLS and metrics comparisons (the realistic and incompressible phases only). */
    "skip-ab": { type: "boolean", default: false },
    /** Pin the sending mover (all threads) to CPU 0 and the receiving one to CPU 1 (taskset). */
    pin: { type: "boolean", default: false },
    /** Only the TLS vs plaintext comparison on the incompressible image. */
    "tls-only": { type: "boolean", default: false },
    /** Runs of each mode in the TLS comparison (alternating, plaintext first). */
    "tls-rounds": { type: "string", default: "2" },
    /** Only the with/without metrics comparison (A/B, interleaved) on the incompressible image. */
    "metrics-ab": { type: "boolean", default: false },
    /** The same as --metrics-ab (its older name). */
    "metrics-only": { type: "boolean", default: false },
    /** Runs of each mode in the metrics comparison (alternating ABBA: without first in even rounds). */
    "metrics-rounds": { type: "string", default: "3" },
    /** Migrations of the realistic image after the first, on the same stack (see above). */
    repeat: { type: "string", default: "0" },
  },
});
const repeat = Number(values.repeat);
if (!Number.isInteger(repeat) || repeat < 0 || repeat > 100)
  throw new Error(`--repeat must be a whole number from 0 to 100, got "${values.repeat}"`);
const size = parseSize("--size", values.size);
const log = (s: string): void => void process.stderr.write(`${s}\n`);

/** Each tool starts with no dirty pages of an earlier step being written back under it. */
const settle = (): void => void execFileSync("sync");

function timed(cmd: string, args: string[]): number {
  settle();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: "inherit" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status})`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** `run`'s result, and the CPU seconds movers a and b used while it ran. */
async function withMoverCpu<T>(stack: Stack, run: () => Promise<T>): Promise<{ result: T; cpu: [number, number] }> {
  const pids = ["a", "b"].map((h) => stack.movers.get(h)?.child.pid ?? 0);
  const before = await Promise.all(pids.map(cpuSeconds));
  const result = await run();
  const [a, b] = (await Promise.all(pids.map(cpuSeconds))).map((c, i) => Number((c - (before[i] ?? 0)).toFixed(2)));
  return { result, cpu: [a ?? 0, b ?? 0] };
}

/**
 * The realistic image migrated `repeat` more times on the same stack, into new directories of b,
 * each checked against the source's digest `srcSha`: engine seconds and the two movers' CPU
 * seconds of each.
 */
async function repeatRealistic(
  stack: Stack,
  first: ReturnType<typeof buildStart>,
  srcSha: string,
): Promise<{ realistic_repeat_s?: number[]; realistic_repeat_mover_cpu_s?: [number, number][] }> {
  if (repeat === 0) return {};
  const seconds: number[] = [];
  const cpus: [number, number][] = [];
  for (let i = 1; i <= repeat; i++) {
    settle();
    const dir = `in-repeat-${i}`;
    const command = buildStart({ vm: "bench", source: first.source, destination: { host: "b", dir } });
    const { result: r, cpu } = await withMoverCpu(stack, () =>
      runMigration(stack.nats, command, { timeoutMs: 1_800_000 }),
    );
    if (r.state !== "completed") throw new Error(`repeated migration ${r.state}: ${r.reason} ${r.message}`);
    if ((await sha256File(join(stack.root("b"), dir, "disk.img"))) !== srcSha)
      throw new Error(`repeated migration ${i}: the destination differs from the source`);
    seconds.push(r.seconds);
    cpus.push(cpu);
    log(`realistic again (${i}/${repeat}): ${r.seconds.toFixed(3)} s, mover CPU a ${cpu[0]} s, b ${cpu[1]} s`);
  }
  return { realistic_repeat_s: seconds, realistic_repeat_mover_cpu_s: cpus };
}

/** The issue asks to try CPU pinning and keep it only if it helps: this measures it (it did not). */
function pinMovers(stack: Stack): void {
  for (const [host, cpu] of [
    ["a", 0],
    ["b", 1],
  ] as const) {
    const pid = stack.movers.get(host)?.child.pid;
    if (pid !== undefined)
      execFileSync("taskset", ["-a", "-cp", String(cpu % cpus().length), String(pid)], { stdio: "ignore" });
  }
}

function ensureRsync(): void {
  if (spawnSync("rsync", ["--version"]).status === 0) return;
  log("rsync missing: apt-get install -y rsync");
  execFileSync("bash", ["-c", "apt-get update -qq && apt-get install -y -qq rsync"], { stdio: "inherit" });
}

async function main(): Promise<void> {
  ensureRsync();
  const dataDir = mkdtempSync(join(tmpdir(), "dwcp-bench-"));
  const stack = new Stack({ dataDir, hosts: ["a", "b"], replication: false });
  try {
    await stack.start();
    if (values.pin) pinMovers(stack);
    if (values["metrics-ab"] || values["metrics-only"]) {
      const m = await metricsPhase(stack);
      if (values.json) process.stdout.write(`${JSON.stringify({ image_bytes: size, ...m, cpu: cpus()[0]?.model })}\n`);
      return;
    }
    if (values["tls-only"]) {
      const tls = await tlsPhase(stack);
      if (values.json)
        process.stdout.write(`${JSON.stringify({ image_bytes: size, ...tls, cpu: cpus()[0]?.model })}\n`);
      return;
    }
    const srcDir = join(stack.root("a"), "vms/bench");
    mkdirSync(srcDir, { recursive: true });
    const src = join(srcDir, "disk.img");
    log(`generating ${values.size} image (90% holes, text-like and random extents)...`);
    await generateImage(src, { sizeBytes: size, zeroFraction: 0.9, seed: 2026 });

    settle();
    const command = buildStart({
      vm: "bench",
      source: { host: "a", volumes: [{ path: "vms/bench/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "in" },
    });
    const { result: r, cpu: realistic_mover_cpu_s } = await withMoverCpu(stack, () =>
      runMigration(stack.nats, command, { progress: !values.json, timeoutMs: 1_800_000 }),
    );
    if (r.state !== "completed") throw new Error(`migration ${r.state}: ${r.reason} ${r.message}`);
    const dst = join(stack.root("b"), "in/disk.img");
    const srcSha = await sha256File(src);
    if ((await sha256File(dst)) !== srcSha) throw new Error("dwcp destination differs from the source");

    const repeated = await repeatRealistic(stack, command, srcSha);

    // The same image moved within host a (another directory of its root): the mover copies in
    // process, no socket (local-copy.ts). cp is the operator's tool for that.
    settle();
    const local_s = await moveWithinA(stack, "disk.img", "bench-local");

    const cpDst = join(dataDir, "cp.img");
    const rsDir = join(dataDir, "rsync");
    mkdirSync(rsDir);
    const cp_s = timed("cp", ["--sparse=always", src, cpDst]);
    const rsync_s = timed("rsync", ["--whole-file", "--sparse", src, `${rsDir}/`]);
    rmSync(cpDst);
    rmSync(join(rsDir, "disk.img"));
    const cp_sync_s = timed("bash", ["-c", `cp --sparse=always '${src}' '${cpDst}' && sync -f '${cpDst}'`]);
    const rsync_sync_s = timed("bash", [
      "-c",
      `rsync --whole-file --sparse '${src}' '${rsDir}/' && sync -f '${rsDir}/disk.img'`,
    ]);

    // The same image moved by the CLI as an operator runs it from the shell (`dwcp migrate --wait`),
    // timed from spawn to exit: start-up, connecting, the migration and following it to the end.
    settle();
    const cli_wall_s = await cliMigrateWall(stack, dataDir, "vms/bench/disk.img", "cli-realistic");

    const dwcp_s = r.seconds;
    const mbps = (s: number): number => size / s / 1e6;
    const incompressible = values["skip-random"] ? {} : await randomPhase(stack, dataDir, rsDir);
    const skipAb = values["skip-random"] || values["skip-ab"];
    const tls = skipAb ? {} : await tlsPhase(stack);
    const metered = skipAb ? {} : await metricsPhase(stack);
    const result = {
      image_bytes: size,
      dwcp_s,
      cp_s,
      rsync_s,
      cp_sync_s,
      rsync_sync_s,
      dwcp_mbps: mbps(dwcp_s),
      rsync_mbps: mbps(rsync_s),
      cp_mbps: mbps(cp_s),
      ratio_vs_rsync: rsync_s / dwcp_s,
      ratio_vs_rsync_sync: rsync_sync_s / dwcp_s,
      ratio_vs_cp: cp_s / dwcp_s,
      realistic_ratio_vs_cp_sync: dwcp_s / cp_sync_s,
      cli_wall_s,
      realistic_cli_ratio_vs_rsync_sync: rsync_sync_s / cli_wall_s,
      same_host_dwcp_s: local_s,
      same_host_ratio_vs_cp: cp_s / local_s,
      same_host_ratio_vs_rsync: rsync_s / local_s,
      wire_bytes: r.wireBytes,
      zero_bytes: r.zeroBytes,
      realistic_mover_cpu_s,
      ...repeated,
      ...incompressible,
      ...tls,
      ...metered,
      load: loadavg().map((l) => Number(l.toFixed(2))),
      pinned: values.pin,
      native: process.env["DWCP_NATIVE"] ?? "auto",
      cpu: cpus()[0]?.model,
    };
    log(`\n           seconds    MB/s     (image ${values.size}; rsync/dwcp = ${result.ratio_vs_rsync.toFixed(2)}x)`);
    for (const [k, s] of [
      ["dwcp", dwcp_s],
      ["dwcp a->a", local_s],
      ["cp", cp_s],
      ["rsync", rsync_s],
      ["cp+sync", cp_sync_s],
      ["rsync+sync", rsync_sync_s],
      ["dwcp CLI", cli_wall_s],
    ] as const) {
      log(`${k.padEnd(11)} ${s.toFixed(3).padStart(8)} ${mbps(s).toFixed(0).padStart(7)}`);
    }
    log(
      `realistic: dwcp/cp+sync ${result.realistic_ratio_vs_cp_sync.toFixed(3)}x (target <= 1.25), ` +
        `rsync+sync/CLI wall ${result.realistic_cli_ratio_vs_rsync_sync.toFixed(3)}x (target >= 5); load ${loadavg()
          .map((l) => l.toFixed(2))
          .join(" ")}`,
    );
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await stack.stop();
    if (!values.keep) rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The compiled CLI, as an operator runs it. */
const CLI_ENTRY = resolve(import.meta.dirname, "..", "dist", "cli", "dwcp.js");

/**
 * Wall seconds of `dwcp migrate --wait --json` moving `path` from a to b:<dir>, spawned as from the
 * shell; the copy is checked against the source and removed.
 */
async function cliMigrateWall(stack: Stack, dataDir: string, path: string, dir: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(
    process.execPath,
    [
      CLI_ENTRY,
      "migrate",
      "--vm",
      dir,
      "--from",
      `a:${path}`,
      "--to",
      `b:${dir}`,
      "--wait",
      "--json",
      "--data-dir",
      dataDir,
    ],
    { env: { ...process.env, DWCP_NATS_URL: stack.url }, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`dwcp migrate --wait exited ${r.status}: ${r.stderr.slice(0, 500)}`);
  const name = path.slice(path.lastIndexOf("/") + 1);
  const dst = join(stack.root("b"), dir, name);
  if ((await sha256File(dst)) !== (await sha256File(join(stack.root("a"), path))))
    throw new Error("the CLI's destination differs from the source");
  rmSync(join(stack.root("b"), dir), { recursive: true });
  return seconds;
}

/**
 * The disk's durable write of `src`'s bytes: `dd oflag=direct conv=fdatasync` into a new file on
 * the same file system (the source is in the page cache), in seconds.
 */
function durableWrite(src: string, dst: string): number {
  settle();
  const t0 = process.hrtime.bigint();
  execFileSync("dd", [`if=${src}`, `of=${dst}`, "bs=4M", "oflag=direct", "conv=fdatasync", "status=none"]);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  rmSync(dst);
  return s;
}

/**
 * The floor of a durable, verified copy on this disk, in seconds: `src` written to `dst` in 64 MiB
 * batches, each with O_DIRECT and fdatasync (as dwcp makes each batch durable), while the
 * previous batch is read back from the disk with O_DIRECT (the verify's read-back), overlapped.
 * No checksums, no network, no events: only the disk's share of what dwcp does.
 */
function durableVerifiedFloor(src: string, dst: string, bytes: number): number {
  const batch = 64 * 1024 * 1024;
  const n = Math.ceil(bytes / batch);
  const script = `
    set -e
    for ((i = 0; i < ${n}; i++)); do
      dd if='${src}' of='${dst}' bs=64M skip=$i seek=$i count=1 oflag=direct conv=notrunc,fdatasync status=none &
      w=$!
      if ((i > 0)); then dd if='${dst}' of=/dev/null bs=64M skip=$((i - 1)) count=1 iflag=direct status=none; fi
      wait $w
    done
    dd if='${dst}' of=/dev/null bs=64M skip=$((${n} - 1)) count=1 iflag=direct status=none`;
  settle();
  const t0 = process.hrtime.bigint();
  execFileSync("bash", ["-c", script]);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  rmSync(dst);
  return s;
}

/**
 * Moves vms/bench/<file> to another directory of host a (the mover's in-process local copy, no
 * socket), checks the copy against the source and removes it; resolves to the migration's seconds.
 */
async function moveWithinA(stack: Stack, file: string, vm: string): Promise<number> {
  const command = buildStart({
    vm,
    source: { host: "a", volumes: [{ path: `vms/bench/${file}`, kind: "disk" }] },
    destination: { host: "a", dir: "moved" },
  });
  const r = await runMigration(stack.nats, command, { progress: !values.json, timeoutMs: 1_800_000 });
  if (r.state !== "completed") throw new Error(`same-host migration of ${file} ${r.state}: ${r.reason} ${r.message}`);
  if (
    (await sha256File(join(stack.root("a"), "moved", file))) !==
    (await sha256File(join(stack.root("a"), "vms/bench", file)))
  ) {
    throw new Error(`same-host copy of ${file} differs from the source`);
  }
  rmSync(join(stack.root("a"), "moved"), { recursive: true });
  return r.seconds;
}

/** The incompressible phase: nothing to skip, so this measures the data path itself. */
async function randomPhase(stack: Stack, dataDir: string, rsDir: string): Promise<Record<string, number>> {
  const src = join(stack.root("a"), "vms/bench/random.img");
  log(`generating ${values.size} of random bytes...`);
  await generateRandomFile(src, size);
  const sender = stack.movers.get("a")?.child.pid ?? 0;
  const receiver = stack.movers.get("b")?.child.pid ?? 0;
  settle();
  const cpu0 = await cpuSeconds(sender);
  const command = buildStart({
    vm: "bench-rnd",
    source: { host: "a", volumes: [{ path: "vms/bench/random.img", kind: "disk" }] },
    destination: { host: "b", dir: "in" },
  });
  const r = await runMigration(stack.nats, command, { progress: !values.json, timeoutMs: 1_800_000 });
  if (r.state !== "completed") throw new Error(`random migration ${r.state}: ${r.reason} ${r.message}`);
  const cpu = (await cpuSeconds(sender)) - cpu0;
  const rsync_random_s = timed("rsync", ["--whole-file", src, `${rsDir}/`]);
  const cpDst = join(dataDir, "cp-random.img");
  const cp_random_s = timed("cp", [src, cpDst]);
  rmSync(cpDst);
  // Within host a: the in-process local copy (no socket), against that cp.
  settle();
  const local_s = await moveWithinA(stack, "random.img", "bench-rnd-local");
  settle();
  const sendfile_s = await rawSendfile(src, join(dataDir, "sendfile.img"));
  // The same transfer without the whole-volume read-back (`verify: false`): every chunk's CRC32C
  // is still checked at the destination before it is written, and every batch fsynced. What the
  // default's read-back of the written volume costs on this disk, measured in the same run.
  settle();
  const noVerify = buildStart({
    vm: "bench-rnd-nv",
    source: { host: "a", volumes: [{ path: "vms/bench/random.img", kind: "disk" }] },
    destination: { host: "b", dir: "in-nv" },
    options: { verify: false },
  });
  const nv = await runMigration(stack.nats, noVerify, { progress: !values.json, timeoutMs: 1_800_000 });
  if (nv.state !== "completed")
    throw new Error(`random migration without read-back ${nv.state}: ${nv.reason} ${nv.message}`);
  // The disk's durable write rate, and the floor of a durable verified copy, in the same run.
  const disk_durable_s = durableWrite(src, join(dataDir, "dd-direct.img"));
  const floor_s = durableVerifiedFloor(src, join(dataDir, "dd-floor.img"), size);
  const gb = size / 1e9;
  const rss = Math.max(await peakRssBytes(sender), await peakRssBytes(receiver));
  log(
    `incompressible: dwcp ${r.seconds.toFixed(3)} s, rsync --whole-file ${rsync_random_s.toFixed(3)} s, ` +
      `raw sendfile ${sendfile_s.toFixed(3)} s; sender ${(cpu / gb).toFixed(2)} CPU s/GB; ` +
      `peak mover RSS ${(rss / 2 ** 20).toFixed(1)} MiB`,
  );
  log(
    `incompressible within host a (local copy): dwcp ${local_s.toFixed(3)} s, cp ${cp_random_s.toFixed(3)} s, ` +
      `cp/dwcp ${(cp_random_s / local_s).toFixed(2)}x`,
  );
  log(
    `incompressible without the read-back (verify: false): dwcp ${nv.seconds.toFixed(3)} s, ` +
      `rsync/dwcp ${(rsync_random_s / nv.seconds).toFixed(2)}x`,
  );
  log(
    `disk: dd oflag=direct conv=fdatasync ${disk_durable_s.toFixed(3)} s (${(gb / disk_durable_s).toFixed(3)} GB/s), ` +
      `dwcp at ${(disk_durable_s / r.seconds).toFixed(3)}x of it (target >= 0.85); durable write + O_DIRECT ` +
      `read-back overlapped (the floor of a verified copy) ${floor_s.toFixed(3)} s, ` +
      `dwcp at ${(floor_s / r.seconds).toFixed(3)}x of it`,
  );
  return {
    disk_durable_s,
    disk_durable_gbps: gb / disk_durable_s,
    random_ratio_vs_disk: disk_durable_s / r.seconds,
    durable_verified_floor_s: floor_s,
    durable_verified_floor_gbps: gb / floor_s,
    random_ratio_vs_floor: floor_s / r.seconds,
    random_dwcp_s: r.seconds,
    random_no_verify_dwcp_s: nv.seconds,
    random_no_verify_ratio_vs_rsync: rsync_random_s / nv.seconds,
    random_rsync_s: rsync_random_s,
    random_cp_s: cp_random_s,
    random_same_host_dwcp_s: local_s,
    random_same_host_ratio_vs_cp: cp_random_s / local_s,
    random_sendfile_s: sendfile_s,
    random_ratio_vs_rsync: rsync_random_s / r.seconds,
    random_ratio_vs_sendfile: sendfile_s / r.seconds,
    sender_cpu_s_per_gb: cpu / gb,
    mover_peak_rss_bytes: rss,
  };
}

/** Restart both movers with the data channel in plaintext (--plaintext-data) or TLS (the stack's certificates). */
async function restartMovers(
  stack: Stack,
  mode: "plaintext" | "tls",
  extraArgs: (host: string) => string[] = () => [],
) {
  for (const host of ["a", "b"]) {
    await stack.movers.get(host)?.stop();
    await stack.startMover(host, [...(mode === "plaintext" ? ["--plaintext-data"] : []), ...extraArgs(host)]);
  }
  if (values.pin) pinMovers(stack);
}

/** The incompressible image a → b once, checked byte for byte; resolves to its seconds. */
async function migrateRandom(stack: Stack, vm: string, dir: string, digest: string): Promise<number> {
  const command = buildStart({
    vm,
    source: { host: "a", volumes: [{ path: "vms/bench/random.img", kind: "disk" }] },
    destination: { host: "b", dir },
  });
  const r = await runMigration(stack.nats, command, { progress: !values.json, timeoutMs: 1_800_000 });
  if (r.state !== "completed") throw new Error(`${vm} migration ${r.state}: ${r.reason} ${r.message}`);
  const dst = join(stack.root("b"), `${dir}/random.img`);
  if ((await sha256File(dst)) !== digest) throw new Error(`${vm} destination differs from the source`);
  rmSync(join(stack.root("b"), dir), { recursive: true });
  return r.seconds;
}

/** vms/bench/random.img on host a (generated if absent) and its SHA-256. */
async function randomImage(stack: Stack): Promise<string> {
  const src = join(stack.root("a"), "vms/bench/random.img");
  if (!existsSync(src)) {
    mkdirSync(join(stack.root("a"), "vms/bench"), { recursive: true });
    log(`generating ${values.size} of random bytes...`);
    await generateRandomFile(src, size);
  }
  return sha256File(src);
}

/**
 * What metrics cost: the incompressible image a → b with the coordinator and both movers
 * restarted without a metrics listener, and with one (--metrics-listen on loopback) that this
 * process scrapes every second, as a Prometheus would at a short interval; alternating ABBA.
 * Each round's pair (one run of each mode, back to back) gives a ratio with / without, so a
 * machine that slows down or speeds up between rounds moves both runs of a pair together; the
 * ratios' min and median are the figures. The counters themselves are always compiled in:
 * "without" means no listener, no scrape and no JetStream or disk polling.
 */
async function metricsPhase(stack: Stack): Promise<Record<string, number | number[]>> {
  const digest = await randomImage(stack);
  const rounds = Number.parseInt(values["metrics-rounds"] ?? "3", 10);
  const runs = { without: [] as number[], with: [] as number[] };
  // The three services' CPU seconds per GB: less at the mercy of a shared machine than wall time.
  const cpu = { without: [] as number[], with: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    // ABBA: each mode goes first in every other round, so neither always follows the other.
    const order = round % 2 === 0 ? (["without", "with"] as const) : (["with", "without"] as const);
    for (const mode of order) {
      const ports = new Map<string, number>();
      for (const name of ["coordinator", "a", "b"]) ports.set(name, await freePort());
      const listen = (name: string): string[] =>
        mode === "with" ? ["--metrics-listen", `127.0.0.1:${ports.get(name) ?? 0}`] : [];
      await stack.coordinators.pop()?.stop();
      await stack.startCoordinator(listen("coordinator"));
      await restartMovers(stack, "tls", listen);
      let scrapes = 0;
      const scraper =
        mode === "with"
          ? setInterval(() => {
              for (const port of ports.values())
                void fetch(`http://127.0.0.1:${port}/metrics`)
                  .then((r) => r.text())
                  .then(
                    () => scrapes++,
                    () => undefined,
                  );
            }, 1_000)
          : undefined;
      settle();
      const pids = [stack.coordinators[0], stack.movers.get("a"), stack.movers.get("b")].map((p) => p?.child.pid ?? 0);
      const cpuOf = async (): Promise<number> => (await Promise.all(pids.map(cpuSeconds))).reduce((x, y) => x + y, 0);
      const cpu0 = await cpuOf();
      try {
        runs[mode].push(await migrateRandom(stack, `bench-metrics-${mode}-${round}`, `in-metrics-${mode}`, digest));
        cpu[mode].push(((await cpuOf()) - cpu0) / (size / 1e9));
      } finally {
        clearInterval(scraper);
      }
      const scraped = mode === "with" ? ` (${scrapes} scrapes)` : "";
      log(`round ${round + 1}: incompressible a -> b, metrics ${mode}: ${runs[mode].at(-1)?.toFixed(3)} s${scraped}`);
    }
  }
  await stack.coordinators.pop()?.stop();
  await stack.startCoordinator();
  await restartMovers(stack, "tls");
  const ratios = runs.with.map((w, i) => w / (runs.without[i] ?? Number.NaN));
  const cpuRatios = cpu.with.map((w, i) => w / (cpu.without[i] ?? Number.NaN));
  const min = (xs: number[]): number => Math.min(...xs);
  const overhead = median(ratios) - 1;
  const cpuOverhead = median(cpuRatios) - 1;
  // The parts, measured here: what one scrape and one chunk's counters cost, scaled to one GB
  // moved (three services scraped every second for the median run), against the CPU per GB.
  const parts = await instrumentationCost();
  const chunksPerGb = 1e9 / DEFAULT_CHUNK_BYTES;
  const scrapeCpuPerGb = (3 * median(runs.with) * parts.scrapeCpuS) / (size / 1e9);
  const budget = (scrapeCpuPerGb + chunksPerGb * parts.chunkS) / median(cpu.without);
  const pct = (x: number): string => `${x >= 1 ? "+" : ""}${((x - 1) * 100).toFixed(2)}%`;
  log("\nround  without s  with s   with/without  CPU s/GB without  with   with/without");
  for (let i = 0; i < rounds; i++)
    log(
      `${String(i + 1).padStart(5)}  ${(runs.without[i] ?? 0).toFixed(3).padStart(9)}  ` +
        `${(runs.with[i] ?? 0).toFixed(3).padStart(7)}  ${(ratios[i] ?? 0).toFixed(4).padStart(12)}  ` +
        `${(cpu.without[i] ?? 0).toFixed(3).padStart(16)}  ${(cpu.with[i] ?? 0).toFixed(3).padStart(5)}  ` +
        `${(cpuRatios[i] ?? 0).toFixed(4).padStart(12)}`,
    );
  log(
    `with/without, time: min ${min(ratios).toFixed(4)} (${pct(min(ratios))}), median ` +
      `${median(ratios).toFixed(4)} (${pct(median(ratios))}); CPU: min ${min(cpuRatios).toFixed(4)}, ` +
      `median ${median(cpuRatios).toFixed(4)} (${pct(median(cpuRatios))}) (target < 2% of the time)`,
  );
  log(
    `time, s: without min ${min(runs.without).toFixed(3)} median ${median(runs.without).toFixed(3)}; ` +
      `with min ${min(runs.with).toFixed(3)} median ${median(runs.with).toFixed(3)}`,
  );
  log(
    `one scrape ${(parts.scrapeCpuS * 1e3).toFixed(2)} ms CPU, ` +
      `one chunk's counters ${(parts.chunkS * 1e9).toFixed(0)} ns: ` +
      `${(budget * 100).toFixed(2)}% of the services' CPU per GB at one scrape a second`,
  );
  return {
    metrics_runs_s: runs.with,
    no_metrics_runs_s: runs.without,
    metrics_ratio_per_round: ratios,
    metrics_ratio_min: min(ratios),
    metrics_ratio_median: median(ratios),
    metrics_cpu_s_per_gb: cpu.with,
    no_metrics_cpu_s_per_gb: cpu.without,
    metrics_cpu_ratio_per_round: cpuRatios,
    metrics_overhead: overhead,
    metrics_cpu_overhead: cpuOverhead,
    scrape_cpu_s: parts.scrapeCpuS,
    chunk_instrumentation_s: parts.chunkS,
    metrics_cpu_budget: budget,
  };
}

/** The median (the mean of the middle two of an even count). */
function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** CPU seconds of one scrape of a mover's registry, and wall seconds of one chunk's instrumentation. */
async function instrumentationCost(): Promise<{ scrapeCpuS: number; chunkS: number }> {
  initMetrics({ svc: "mover", host: "bench" });
  for (let i = 0; i < 1000; i++) metrics.chunkStore.observe(0.003);
  await registry.metrics();
  const n = 200;
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < n; i++) await registry.metrics();
  const used = process.cpuUsage(cpu0);
  const m = 200_000;
  const t0 = performance.now();
  for (let i = 0; i < m; i++) {
    const started = performance.now();
    metrics.bytesWritten.inc(DEFAULT_CHUNK_BYTES);
    metrics.chunkStore.observe(secondsSince(started));
  }
  return { scrapeCpuS: (used.user + used.system) / 1e6 / n, chunkS: (performance.now() - t0) / 1e3 / m };
}

/**
 * What TLS costs: the incompressible image a → b with the data channel in plaintext (sendfile
 * and native recv) and in TLS 1.3 with mutual authentication, alternating so that neither mode
 * gets the quieter moments of a shared machine; the best run of each mode is compared.
 */
async function tlsPhase(stack: Stack): Promise<Record<string, number | number[]>> {
  const digest = await randomImage(stack);
  const rounds = Number.parseInt(values["tls-rounds"] ?? "2", 10);
  const runs = { plaintext: [] as number[], tls: [] as number[] };
  const cpu = { plaintext: [] as number[], tls: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    for (const mode of ["plaintext", "tls"] as const) {
      await restartMovers(stack, mode);
      settle();
      const sender = stack.movers.get("a")?.child.pid ?? 0;
      const cpu0 = await cpuSeconds(sender);
      runs[mode].push(await migrateRandom(stack, `bench-${mode}-${round}`, `in-${mode}`, digest));
      cpu[mode].push(((await cpuSeconds(sender)) - cpu0) / (size / 1e9));
      log(`incompressible a -> b, ${mode}: ${runs[mode].at(-1)?.toFixed(3)} s`);
    }
  }
  const best = (xs: number[]): number => Math.min(...xs);
  const overhead = best(runs.tls) / best(runs.plaintext) - 1;
  log(
    `TLS vs plaintext (best of ${rounds}): ${best(runs.tls).toFixed(3)} s vs ${best(runs.plaintext).toFixed(3)} s, ` +
      `TLS costs ${(overhead * 100).toFixed(1)}% (target <= 15%: ${overhead <= 0.15 ? "met" : "not met"})`,
  );
  return {
    tls_runs_s: runs.tls,
    plaintext_runs_s: runs.plaintext,
    tls_sender_cpu_s_per_gb: cpu.tls,
    plaintext_sender_cpu_s_per_gb: cpu.plaintext,
    tls_overhead: overhead,
  };
}

main().catch((err: unknown) => {
  log(`bench:migrate failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
