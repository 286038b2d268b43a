// npm run bench:live [-- --json] [--memory-mib 1024] [--disk-gib 2] [--fill-mib 512] [--runs 1]
//   [--dirty-fraction 0.01] [--dirty-block 64K] [--cache warm,cold] [--no-incremental] [--nbd-only] [--keep]
//   [--wan continental [--wan-cc reno]]
// --runs 0 runs only the incremental part (no migrations).
// Live migration of the counting guest (test/support/guest.ts; QEMU under TCG) from host a to
// host b on loopback, measured in the same run three ways:
// 1. dwcp's live engine (bench/support/live-dwcp.ts: migrateLive to an IncomingVms behind b's data
//    server, mirror and RAM stream through tunnels over mutual TLS);
// 2. QEMU's own migration with storage, QEMU to QEMU over loopback TCP (bench/support/live-qemu.ts),
//    what libvirt's --copy-storage-all drives; same capabilities and parameters;
// 3. a crash-consistent snapshot of the running guest after ~1% of its disk changed, against the
//    file-based fingerprint sync of the same image (bench/support/live-incremental.ts).
// Each migration boots a fresh guest from the same disk (`--fill-mib` of mixed data on a sparse
// `--disk-gib` disk), waits for it to count, migrates it, checks that it counts on at b without a
// reboot and that b's disk is a consistent image. With --runs N the two migrations alternate which
// goes first and the medians are reported. The last line (--json) is one JSON object.
// --wan PROFILE moves the guest from site a to site b of the emulated WAN (test/wan) instead: both
// migrations cross the same link, dwcp's through its tunnels (BBR, compressed when that pays),
// QEMU's over its own TCP connections (the sites' default congestion control, --wan-cc). Both
// mirror in write-blocking mode there: in the background neither converges across the link.
import { execFileSync } from "node:child_process";
import { once as onceEvent } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseSize } from "../cli/args.js";
import { startVm, stopVm } from "../services/mover/src/infra/vm/runner.js";
import { buildGuest, checkCounterImage, serialWhen } from "../test/support/guest.js";
import { PROFILES, startWan, wanUnavailable, type ProfileName, type WanProfile } from "../test/wan/wan.js";
import { startDwcpMigrator, type BenchSite, type LiveFigures, type LiveRequest } from "./support/live-dwcp.js";
import { counters, DISK_PATH, Lab } from "./support/live-guest.js";
import { incrementalBench, type IncrementalFigures } from "./support/live-incremental.js";
import { migrateWithQemu } from "./support/live-qemu.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    "memory-mib": { type: "string", default: "1024" },
    "disk-gib": { type: "string", default: "2" },
    "fill-mib": { type: "string", default: "512" },
    runs: { type: "string", default: "1" },
    "dirty-fraction": { type: "string", default: "0.01" },
    "dirty-block": { type: "string", default: "64K" },
    /** Page-cache state of the image before each timed incremental sync: warm, cold or both. */
    cache: { type: "string", default: "warm,cold" },
    "no-incremental": { type: "boolean", default: false },
    /** The VM snapshot reads every block through QEMU's NBD export, not the raw image directly. */
    "nbd-only": { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    /** Move the guest across the emulated WAN (test/wan): metro, continental or intercontinental. */
    wan: { type: "string" },
    /** The sites' default congestion control on the WAN (what QEMU's own sockets get). Default: the host's. */
    "wan-cc": { type: "string" },
  },
});
const positive = (flag: string, v: string, least = 1): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < least) throw new Error(`--${flag} must be an integer >= ${least}, got "${v}"`);
  return n;
};
const opts = {
  memoryMiB: positive("memory-mib", values["memory-mib"]),
  diskGiB: positive("disk-gib", values["disk-gib"]),
  fillMiB: Number(values["fill-mib"]),
};
/** 0: only the incremental part. */
const runs = positive("runs", values.runs, 0);
const fraction = Number(values["dirty-fraction"]);
const dirtyBlock = parseSize("--dirty-block", values["dirty-block"]);
const caches = values.cache.split(",").map((c) => {
  if (c !== "warm" && c !== "cold") throw new Error(`--cache takes warm, cold or warm,cold, got "${values.cache}"`);
  return c;
});
const say = (s: string): boolean => process.stderr.write(`${s}\n`);

// --wan: this process builds the emulated link and runs the bench again inside site a's namespace
// (QEMU at a, dwcp's source side, the QEMU baseline's source), host b's process and QEMUs in site
// b's; the inner run learns b's namespace and address from WAN_ENV. No incremental part: it has
// no link to cross.
const WAN_ENV = "DWCP_BENCH_LIVE_WAN";
interface WanSite {
  site: BenchSite;
  profile: WanProfile;
  congestionControl: string;
}
const inWan = process.env[WAN_ENV] === undefined ? undefined : (JSON.parse(process.env[WAN_ENV]) as WanSite);
if (values.wan !== undefined && inWan === undefined) process.exit(await aroundWan(values.wan, values["wan-cc"]));

const dir = mkdtempSync(join(tmpdir(), "dwcp-bench-live-"));
let lab: Lab | undefined;
let closeMigrator: (() => Promise<void>) | undefined;
const cleanup = async (): Promise<void> => {
  try {
    await lab?.stopAll();
    const closing = closeMigrator?.().catch(() => undefined);
    await Promise.race([closing, new Promise((r) => setTimeout(r, 10_000).unref())]);
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
};
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.once(signal, () => {
    say(`${signal}: stopping the bench's VMs and removing ${dir}`);
    void cleanup().finally(() => process.exit(130));
  });

/** Boots a fresh guest at `src`, migrates it with `how`, and checks it counts on at `dst`. */
async function once(
  l: Lab,
  name: string,
  how: (req: LiveRequest) => Promise<LiveFigures>,
): Promise<LiveFigures & { consistent: boolean }> {
  const srcRoot = l.root(`${name}-a`);
  const dstRoot = l.root(`${name}-b`);
  const req: LiveRequest = {
    stateDir: l.stateDir(`${name}-a-vms`),
    destRoot: dstRoot,
    destStateDir: l.stateDir(`${name}-b-vms`),
  };
  l.freshDisk(srcRoot);
  rmSync(join(dstRoot, DISK_PATH), { force: true });
  await startVm(l.definition(srcRoot), req.stateDir);
  await l.counted(req.stateDir, 2);
  execFileSync("sync"); // the disk copy's writeback lands before, not during, the migration
  const figures = await how(req);
  // The guest counts on at b from where it stopped at a, without booting again.
  const text = await serialWhen(
    req.destStateDir,
    "g",
    (t) => counters(t).length >= 3,
    "counted three times after the migration",
    120_000,
  );
  if (text.includes("dwcp-guest boot")) throw new Error(`${name}: the guest rebooted at the destination`);
  await stopVm(req.destStateDir, "g");
  const image = checkCounterImage(join(dstRoot, DISK_PATH));
  if (!image.consistent) say(`${name}: the destination's disk is not consistent: ${image.reason}`);
  rmSync(join(dstRoot, DISK_PATH), { force: true });
  rmSync(join(srcRoot, DISK_PATH), { force: true });
  return { ...figures, consistent: image.consistent };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

try {
  const startedAt = new Date().toISOString();
  const loadBefore = loadavg();
  say(`guest: ${opts.memoryMiB} MiB memory, ${opts.diskGiB} GiB disk with ${opts.fillMiB} MiB of data; in ${dir}`);
  lab = new Lab(dir, opts);
  // --runs 0: only the incremental part, no migrator.
  const migrator =
    runs > 0
      ? await startDwcpMigrator(
          join(dir, "dwcp"),
          lab.root("dwcp-b"),
          lab.stateDir("dwcp-b-vms"),
          undefined,
          inWan?.site,
        )
      : undefined;
  // On the WAN the baseline's destination QEMU starts in b's site (through a wrapper), listens on
  // b's address and is mirrored to write-blocking, as dwcp's engine does there.
  const qemuAtB =
    inWan === undefined
      ? undefined
      : {
          binary: qemuInSite(dir, inWan.site.netns),
          at: { destHost: inWan.site.address, copyMode: "write-blocking" as const },
        };
  closeMigrator = () => migrator?.close() ?? Promise.resolve();
  const dwcpRuns: (LiveFigures & { consistent: boolean })[] = [];
  const qemuRuns: (LiveFigures & { consistent: boolean })[] = [];
  for (let i = 0; i < runs; i++) {
    const order = i % 2 === 0 ? (["qemu", "dwcp"] as const) : (["dwcp", "qemu"] as const);
    for (const which of order) {
      say(`run ${i + 1}/${runs}: ${which} ...`);
      const l = lab;
      const r =
        which === "dwcp"
          ? await once(l, "dwcp", (req) => migrator!.migrate(req))
          : await once(l, "qemu", (req) => {
              const def = l.definition(req.destRoot);
              if (qemuAtB === undefined) return migrateWithQemu(req, def);
              return migrateWithQemu(req, { ...def, machine: { binary: qemuAtB.binary } }, qemuAtB.at);
            });
      (which === "dwcp" ? dwcpRuns : qemuRuns).push(r);
      say(
        `  ${which}: total ${(r.totalMs / 1000).toFixed(2)} s (from mirror ${(r.fromMirrorMs / 1000).toFixed(2)} s), ` +
          `mirror ${(r.mirrorMs / 1000).toFixed(2)} s, downtime ${r.downtimeMs} ms, paused ${r.pausedMs.toFixed(0)} ms`,
      );
    }
  }
  const rounds =
    values["no-incremental"] || inWan !== undefined
      ? []
      : await incrementalBench(lab, { fraction, blockBytes: dirtyBlock, caches, direct: !values["nbd-only"] }, say);
  const incr = rounds.find((r) => r.cache === "warm") ?? rounds[0];
  const cold = rounds.find((r) => r.cache === "cold");
  const loadAfter = loadavg();

  const pick = (rs: LiveFigures[], k: keyof LiveFigures): number => median(rs.map((r) => r[k]));
  const result = {
    link: inWan?.profile.name ?? "loopback",
    ...(inWan === undefined
      ? {}
      : {
          link_mbps: inWan.profile.rateMbit,
          rtt_ms: inWan.profile.rttMs,
          loss_pct: inWan.profile.lossPct,
          congestion_control: inWan.congestionControl,
        }),
    date: startedAt,
    cpu: cpus()[0]?.model ?? "unknown",
    cpus: cpus().length,
    load_avg_before: loadBefore.map(r3),
    load_avg_after: loadAfter.map(r3),
    qemu_version: execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0],
    accel: "tcg",
    memory_mib: opts.memoryMiB,
    disk_gib: opts.diskGiB,
    fill_mib: opts.fillMiB,
    runs,
    total_s: r3(pick(dwcpRuns, "totalMs") / 1000),
    qemu_total_s: r3(pick(qemuRuns, "totalMs") / 1000),
    total_ratio_vs_qemu: r3(pick(dwcpRuns, "totalMs") / pick(qemuRuns, "totalMs")),
    from_mirror_s: r3(pick(dwcpRuns, "fromMirrorMs") / 1000),
    qemu_from_mirror_s: r3(pick(qemuRuns, "fromMirrorMs") / 1000),
    from_mirror_ratio_vs_qemu: r3(pick(dwcpRuns, "fromMirrorMs") / pick(qemuRuns, "fromMirrorMs")),
    mirror_s: r3(pick(dwcpRuns, "mirrorMs") / 1000),
    qemu_mirror_s: r3(pick(qemuRuns, "mirrorMs") / 1000),
    downtime_ms: pick(dwcpRuns, "downtimeMs"),
    qemu_downtime_ms: pick(qemuRuns, "downtimeMs"),
    paused_ms: Math.round(pick(dwcpRuns, "pausedMs")),
    qemu_paused_ms: Math.round(pick(qemuRuns, "pausedMs")),
    ram_transferred_bytes: pick(dwcpRuns, "ramTransferredBytes"),
    qemu_ram_transferred_bytes: pick(qemuRuns, "ramTransferredBytes"),
    migrated_images_consistent: [...dwcpRuns, ...qemuRuns].every((r) => r.consistent),
    dwcp_runs: dwcpRuns.map(roundRun),
    qemu_runs: qemuRuns.map(roundRun),
    ...(incr === undefined
      ? {}
      : {
          incremental_ratio_vs_file_sync: r3(incr.ratio),
          incremental_cache: incr.cache,
          incremental_s: r3(incr.vmIncrementalS),
          file_sync_s: r3(incr.fileSyncS),
          ...(cold === undefined || cold === incr
            ? {}
            : {
                incremental_cold_ratio_vs_file_sync: r3(cold.ratio),
                incremental_cold_s: r3(cold.vmIncrementalS),
                file_sync_cold_s: r3(cold.fileSyncS),
              }),
          snapshots_consistent: rounds.every((r) => r.consistent),
          incremental: rounds.map((r) => ({
            cache: r.cache,
            disk_bytes: r.diskBytes,
            dirty_bytes: r.dirtyBytes,
            dirty_block_bytes: r.blockBytes,
            first_snapshot_s: r3(r.vmFullS),
            incremental_s: r3(r.vmIncrementalS),
            incremental_mode: r.vmIncrementalMode,
            incremental_read_bytes: r.vmIncrementalReadBytes,
            incremental_wire_bytes: r.vmIncrementalWireBytes,
            incremental_phases_ms: r.vmIncrementalPhasesMs,
            incremental_vm_phases_ms: r.vmIncrementalVmPhasesMs,
            file_sync_s: r3(r.fileSyncS),
            file_sync_wire_bytes: r.fileSyncWireBytes,
            file_sync_phases_ms: r.fileSyncPhasesMs,
            ratio: r3(r.ratio),
            snapshots: r.snapshots,
          })),
        }),
  };
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else printTable(result, rounds);
} finally {
  await cleanup();
}

/** Builds the WAN, runs this bench inside site a, and stops the WAN; resolves with the run's exit code. */
async function aroundWan(name: string, congestionControl: string | undefined): Promise<number> {
  const why = wanUnavailable();
  if (why !== undefined) throw new Error(`--wan: ${why}`);
  if (!(name in PROFILES)) throw new Error(`--wan takes ${Object.keys(PROFILES).join(", ")}, got "${name}"`);
  const profile = PROFILES[name as ProfileName];
  buildGuest(); // fetches and caches the guest's kernel here: the sites reach nothing beyond the link
  const wan = await startWan({ profile, sites: ["a", "b"], ...(congestionControl && { congestionControl }) });
  try {
    const cc = (await wan.exec("a", "sysctl", ["-n", "net.ipv4.tcp_congestion_control"])).stdout.trim();
    const inner: WanSite = { site: { netns: wan.ns("b"), address: wan.address("b") }, profile, congestionControl: cc };
    say(`emulated ${name} link (${profile.rttMs} ms, ${profile.rateMbit} Mbit/s, ${profile.lossPct}% loss), ${cc}`);
    const child = wan.spawn(
      "a",
      process.execPath,
      ["--import", "tsx", import.meta.filename, ...process.argv.slice(2)],
      {
        stdio: "inherit",
        env: { ...process.env, [WAN_ENV]: JSON.stringify(inner) },
      },
    );
    for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => child.kill(signal));
    const [code] = (await onceEvent(child, "exit")) as [number | null];
    return code ?? 1;
  } finally {
    await wan.stop();
  }
}

/** A QEMU binary for VM definitions that starts QEMU in network namespace `netns` (same PID: both exec). */
function qemuInSite(dir: string, netns: string): string {
  const path = join(dir, "qemu-in-site.sh");
  writeFileSync(path, `#!/bin/sh\nexec ip netns exec ${netns} qemu-system-x86_64 "$@"\n`, { mode: 0o755 });
  return path;
}

function roundRun(r: LiveFigures & { consistent: boolean }) {
  return {
    total_s: r3(r.totalMs / 1000),
    from_mirror_s: r3(r.fromMirrorMs / 1000),
    mirror_s: r3(r.mirrorMs / 1000),
    downtime_ms: r.downtimeMs,
    paused_ms: Math.round(r.pausedMs),
    consistent: r.consistent,
  };
}

function printTable(
  r: {
    total_s: number;
    qemu_total_s: number;
    total_ratio_vs_qemu: number;
    from_mirror_s: number;
    qemu_from_mirror_s: number;
    from_mirror_ratio_vs_qemu: number;
    mirror_s: number;
    qemu_mirror_s: number;
    downtime_ms: number;
    qemu_downtime_ms: number;
    paused_ms: number;
    qemu_paused_ms: number;
    migrated_images_consistent: boolean;
    load_avg_after: number[];
  },
  rounds: IncrementalFigures[],
): void {
  const rows: [string, string, string, string][] = [
    ["", "dwcp", "QEMU", "dwcp/QEMU"],
    ["total (request to running) s", `${r.total_s}`, `${r.qemu_total_s}`, `${r.total_ratio_vs_qemu}`],
    ["mirror start to running s", `${r.from_mirror_s}`, `${r.qemu_from_mirror_s}`, `${r.from_mirror_ratio_vs_qemu}`],
    ["mirror to READY s", `${r.mirror_s}`, `${r.qemu_mirror_s}`, ""],
    ["downtime (query-migrate) ms", `${r.downtime_ms}`, `${r.qemu_downtime_ms}`, ""],
    ["paused (STOP to running) ms", `${r.paused_ms}`, `${r.qemu_paused_ms}`, ""],
  ];
  const w = [0, 1, 2, 3].map((c) => Math.max(...rows.map((row) => row[c]?.length ?? 0)));
  for (const row of rows) process.stdout.write(`${row.map((cell, c) => cell.padEnd(w[c] ?? 0)).join("  ")}\n`);
  process.stdout.write(`migrated disks consistent: ${r.migrated_images_consistent}\n`);
  for (const incr of rounds)
    process.stdout.write(
      `incremental snapshot of the running VM, ${incr.cache} cache (${incr.dirtyBytes} bytes dirty in ` +
        `${incr.blockBytes}-byte blocks): ${incr.vmIncrementalS.toFixed(3)} s vs file-based sync ` +
        `${incr.fileSyncS.toFixed(3)} s = ${incr.ratio.toFixed(3)}x; snapshots consistent: ${incr.consistent}\n`,
    );
  process.stdout.write(`load average after: ${r.load_avg_after.join(" ")}\n`);
}
