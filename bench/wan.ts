// npm run bench:wan [-- --json] [--profile continental[,intercontinental,...]] [--size 1G] [--keep]
// npm run bench:wan -- --outage [--json] [--profile continental] [--size 2G] [--outage-s 30]
// dwcp across an emulated WAN (test/wan/: two site namespaces joined by a delaying, lossy
// forwarder and tbf), against rsync and a plain TCP copy over the same link in the same run.
// Site a runs nats-server, the coordinator and the source mover; site b the destination mover and
// an rsync daemon. Per profile:
//   incompressible: `--size` random bytes: dwcp, `rsync -W --sparse` to the daemon, one TCP stream
//   realistic: a Debian minbase rootfs in a 2 GiB ext4 image (built with debootstrap and
//     `mkfs.ext4 -d` on first use, cached in ~/.cache/dwcp/wan): dwcp, `rsync -W --sparse`, and
//     with `-z`
//   incremental: files written into the image with `debugfs -w`, then the changed image again:
//     `rsync --inplace --no-whole-file` with and without -z onto the old copy; `dwcp migrate
//     --incremental` onto the copy the realistic case left at site b (only the chunks that differ
//     from it cross the link)
//   one TCP stream (fresh connection, fsynced) of as many random bytes as the realistic and the
//     incremental dwcp runs put on the link: what a single stream's start-up costs on this link
// Wire bytes are counted on the link (tx bytes of the forwarding namespace's veth towards site b,
// Ethernet headers included), so they include NATS traffic and every protocol's framing. The link
// bound of a run is those bytes at the link rate plus one RTT. Each destination is checked
// byte-identical after its run (not timed). Ratios are baseline time / dwcp time.
// --outage runs only the outage case (bench/wan-outage.ts): `--size` (default 2G) of random bytes
// migrated undisturbed, then again with the link cut for `--outage-s` once half has crossed it:
// whether it completes, what the outage made it resend (link bytes and dwcp's wire bytes, run
// minus baseline, also in 64 MiB batches) and how long it took to resume after the link returned.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { cpus, homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { randomFillSync } from "node:crypto";
import { parseSize } from "../cli/args.js";
import { buildStart, runMigration } from "../cli/migrate.js";
import { sha256File } from "../cli/verify.js";
import { writeCryptoRandom } from "./support/random-file.js";
import { PROFILES, startWan, wanUnavailable, type ProfileName, type Wan } from "../test/wan/wan.js";
import { startWanStack, type WanStack } from "../test/wan/wan-stack.js";
import { benchOutage } from "./wan-outage.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    profile: { type: "string", default: "continental" },
    size: { type: "string" },
    keep: { type: "boolean", default: false },
    outage: { type: "boolean", default: false },
    "outage-s": { type: "string", default: "30" },
  },
});
const sizeArg = values.size ?? (values.outage ? "2G" : "1G");
const size = parseSize("--size", sizeArg);
const outageS = Number(values["outage-s"]);
if (!Number.isFinite(outageS) || outageS <= 0 || outageS > 3600)
  throw new Error(`--outage-s must be a number of seconds in (0, 3600], got "${values["outage-s"]}"`);
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const TCP_COPY = resolve(import.meta.dirname, "../test/wan/tcp-copy.mjs");
const CACHE = join(process.env["DWCP_CACHE_DIR"] ?? join(homedir(), ".cache", "dwcp"), "wan");
const IMAGE_BYTES = 2 * 1024 ** 3;

function ensureTools(): void {
  const need = [
    ["rsync", "rsync"],
    ["debootstrap", "debootstrap"],
    ["mkfs.ext4", "e2fsprogs"],
    ["debugfs", "e2fsprogs"],
  ].filter(([cmd]) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status !== 0);
  if (need.length === 0) return;
  const pkgs = [...new Set(need.map(([, p]) => p as string))];
  log(`installing ${pkgs.join(" ")}`);
  execFileSync("bash", ["-c", `apt-get update -qq && apt-get install -y -qq ${pkgs.join(" ")}`], { stdio: "inherit" });
}

/** The Debian mirror apt uses here (sources.list or deb822 .sources), else deb.debian.org. */
function debianMirror(): string {
  const files = ["/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"];
  for (const f of files) {
    const text = existsSync(f) ? readFileSync(f, "utf8") : "";
    const m = /^URIs:\s*(\S+\/debian)\s*$/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\s/m.exec(text);
    if (m?.[1]) return m[1];
  }
  return "http://deb.debian.org/debian";
}

/** A user's VM disk: Debian minbase in a 2 GiB ext4 image, built once and cached. */
function realisticImage(): string {
  const image = join(CACHE, "debian-minbase-2G.ext4");
  if (existsSync(image)) return image;
  mkdirSync(CACHE, { recursive: true });
  const rootfs = join(CACHE, "rootfs");
  if (!existsSync(rootfs)) {
    const tmp = `${rootfs}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    log(`debootstrap --variant=minbase bookworm (${debianMirror()})...`);
    execFileSync("debootstrap", ["--variant=minbase", "bookworm", tmp, debianMirror()], { stdio: "inherit" });
    renameSync(tmp, rootfs);
  }
  const tmp = `${image}.tmp`;
  rmSync(tmp, { force: true });
  execFileSync("truncate", ["-s", String(IMAGE_BYTES), tmp]);
  execFileSync("mkfs.ext4", ["-q", "-F", "-d", rootfs, tmp]);
  renameSync(tmp, image);
  return image;
}

/** Real file writes into the image's filesystem: new files of text-like and random bytes. */
function writeFilesInto(image: string, dir: string): number {
  const cmds = ["mkdir /srv/bench-writes"];
  let bytes = 0;
  for (let i = 0; i < 24; i++) {
    const f = join(dir, `w${i}`);
    const n = (1 + (i % 4)) << 20;
    const buf = Buffer.alloc(n);
    if (i % 2 === 0) randomFillSync(buf);
    else buf.write(`log line ${i}: the quick brown fox jumps over the lazy dog\n`.repeat(n / 64 + 1).slice(0, n));
    writeFileSync(f, buf);
    bytes += n;
    cmds.push(`write ${f} /srv/bench-writes/w${i}`);
  }
  const cmdFile = join(dir, "debugfs.cmds");
  writeFileSync(cmdFile, `${cmds.join("\n")}\n`);
  execFileSync("debugfs", ["-w", "-f", cmdFile, image], { stdio: "ignore" });
  return bytes;
}

const settle = (): void => void execFileSync("sync");

interface Run {
  seconds: number;
  linkBytes: number;
}

async function timedInSite(wan: Wan, site: string, cmd: string, args: string[]): Promise<Run> {
  settle();
  const before = await wan.bytesTo("b");
  const t0 = process.hrtime.bigint();
  await wan.exec(site, cmd, args, { timeoutMs: 3_600_000 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, linkBytes: (await wan.bytesTo("b")) - before };
}

/** One TCP stream of `src` from a into `dst` at b (fsynced); timed from connect to the fsync. */
async function tcpCopy(wan: Wan, src: string, dst: string): Promise<Run> {
  const recv = wan.spawn("b", process.execPath, [TCP_COPY, "recv", wan.address("b"), "5201", dst], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: recv.stdout! })[Symbol.asyncIterator]();
  if ((await lines.next()).value !== "listening") throw new Error("tcp-copy receiver did not start");
  const run = await timedInSite(wan, "a", process.execPath, [TCP_COPY, "send", wan.address("b"), "5201", src]);
  await lines.next();
  return run;
}

type DwcpRun = Run & {
  wireBytes: number;
  zeroSkippedBytes: number;
  compressedBytesIn: number;
  compressedBytesOut: number;
  baseReusedBytes: number;
};

/**
 * Migrate `rel` from a to b's `in-<vm>` (or `to.dir`), check it byte-identical, and remove it
 * unless `to.keep` (a later incremental migration's base). `to.incremental`: onto the copy there.
 */
async function dwcpMigrate(
  wan: Wan,
  ws: WanStack,
  rel: string,
  vm: string,
  to: { dir?: string; keep?: boolean; incremental?: boolean } = {},
): Promise<DwcpRun> {
  settle();
  const before = await wan.bytesTo("b");
  const dir = to.dir ?? `in-${vm}`;
  const command = buildStart({
    vm,
    source: { host: "a", volumes: [{ path: rel, kind: "disk" }] },
    destination: { host: "b", dir },
    options: to.incremental === true ? { incremental: true } : {},
  });
  const r = await runMigration(ws.stack.nats, command, { timeoutMs: 3_600_000 });
  if (r.state !== "completed") throw new Error(`migration ${vm} ${r.state}: ${r.reason} ${r.message}`);
  const linkBytes = (await wan.bytesTo("b")) - before;
  const dst = join(ws.stack.root("b"), dir, rel.split("/").at(-1) ?? "");
  await sameBytes(join(ws.stack.root("a"), rel), dst, `dwcp ${vm}`);
  if (to.keep !== true) rmSync(join(ws.stack.root("b"), dir), { recursive: true, force: true });
  return {
    seconds: r.seconds,
    linkBytes,
    wireBytes: r.wireBytes,
    zeroSkippedBytes: r.zeroSkippedBytes ?? 0,
    compressedBytesIn: r.compressedBytesIn ?? 0,
    compressedBytesOut: r.compressedBytesOut ?? 0,
    baseReusedBytes: r.baseReusedBytes ?? 0,
  };
}

async function sameBytes(a: string, b: string, what: string): Promise<void> {
  if ((await sha256File(a)) !== (await sha256File(b))) throw new Error(`${what}: destination differs from source`);
}

async function startRsyncd(wan: Wan, dir: string, work: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const conf = join(work, "rsyncd.conf");
  writeFileSync(
    conf,
    [`pid file = ${join(work, "rsyncd.pid")}`, "use chroot = no", "[dst]", `  path = ${dir}`, "  read only = no"]
      .concat(["  uid = root", "  gid = root", ""])
      .join("\n"),
  );
  wan.spawn("b", "rsync", ["--daemon", "--no-detach", `--config=${conf}`, `--address=${wan.address("b")}`], {
    stdio: "ignore",
  });
  for (let i = 0; i < 100; i++) {
    const ok = await wan.exec("a", "rsync", [`rsync://${wan.address("b")}/`]).then(
      () => true,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("rsync daemon did not start");
}

const ratio = (baseline: number, dwcp: number): number => baseline / dwcp;
const secs = (runs: Record<string, Run>): string =>
  Object.entries(runs)
    .map(([k, r]) => `${k} ${r.seconds.toFixed(1)} s`)
    .join(", ");

/** What to tear down if the bench is interrupted (namespaces, services, temp files). */
let teardown: (() => Promise<void>) | undefined;
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.once(signal, () => {
    log(`${signal}: stopping the stack and removing the emulated WAN`);
    void (teardown?.() ?? Promise.resolve()).finally(() => process.exit(130));
  });

/**
 * Runs `body` on an emulated WAN of profile `name` with a dwcp stack across it (site a the source,
 * b the destination), and returns its figures with the link's and the machine's. An interrupted
 * bench (SIGINT, SIGTERM) heals the link, stops the stack and the WAN, and removes `work`.
 */
async function onProfile(
  name: ProfileName,
  work: string,
  body: (wan: Wan, ws: WanStack) => Promise<Record<string, unknown>>,
): Promise<Record<string, unknown>> {
  const profile = PROFILES[name];
  const wan = await startWan({ profile, sites: ["a", "b"], hostSite: "a" });
  let ws: WanStack | undefined;
  const stop = async (): Promise<void> => {
    await ws?.stop({ keep: values.keep });
    await wan.stop();
  };
  teardown = async () => {
    await wan.heal().catch(() => undefined);
    await stop();
    if (!values.keep) rmSync(work, { recursive: true, force: true });
  };
  try {
    ws = await startWanStack(wan);
    const cc = (await wan.exec("a", "sysctl", ["-n", "net.ipv4.tcp_congestion_control"])).stdout.trim();
    const figures = await body(wan, ws);
    return {
      profile: name,
      link_mbps: profile.rateMbit,
      rtt_ms: profile.rttMs,
      loss_pct: profile.lossPct,
      congestion_control: cc,
      ...figures,
      cpu: cpus()[0]?.model,
      cores: cpus().length,
    };
  } finally {
    teardown = undefined;
    await stop();
  }
}

/** The outage case alone: the same file with and without a cut of the link half way through. */
function outageProfile(name: ProfileName, work: string): Promise<Record<string, unknown>> {
  return onProfile(name, work, async (wan, ws) => {
    const srcDir = join(ws.stack.root("a"), "vms/bench");
    mkdirSync(srcDir, { recursive: true });
    log(`[${name}] outage: incompressible ${sizeArg}, ${outageS} s cut of the link half way`);
    await writeCryptoRandom(join(srcDir, "random.img"), size);
    return benchOutage(wan, ws, { rel: "vms/bench/random.img", size, outageMs: outageS * 1000, log });
  });
}

function benchProfile(name: ProfileName, work: string): Promise<Record<string, unknown>> {
  const profile = PROFILES[name];
  return onProfile(name, work, async (wan, ws) => {
    const rsyncDir = join(work, "rsyncd");
    await startRsyncd(wan, rsyncDir, work);
    const rsyncUrl = `rsync://${wan.address("b")}/dst/`;
    const linkBound = (bytes: number): number => (bytes * 8) / (profile.rateMbit * 1e6) + profile.rttMs / 1000;
    const srcDir = join(ws.stack.root("a"), "vms/bench");
    mkdirSync(srcDir, { recursive: true });

    log(`[${name}] incompressible ${sizeArg}: dwcp, rsync -W --sparse, one TCP stream`);
    const random = join(srcDir, "random.img");
    await writeCryptoRandom(random, size);
    const dRandom = await dwcpMigrate(wan, ws, "vms/bench/random.img", "random");
    const rRandom = await timedInSite(wan, "a", "rsync", ["-W", "--sparse", random, rsyncUrl]);
    await sameBytes(random, join(rsyncDir, "random.img"), "rsync random");
    rmSync(join(rsyncDir, "random.img"));
    const tcpDst = join(work, "tcp-copy.img");
    const tRandom = await tcpCopy(wan, random, tcpDst);
    await sameBytes(random, tcpDst, "tcp copy");
    rmSync(tcpDst);
    rmSync(random);
    log(`  ${secs({ dwcp: dRandom, rsync: rRandom, tcp: tRandom })}`);

    log(`[${name}] realistic image (Debian minbase, 2 GiB ext4)`);
    const image = join(srcDir, "disk.img");
    execFileSync("cp", ["--sparse=always", realisticImage(), image]);
    // Kept at b's in-real: the incremental case migrates the changed image onto it.
    const dReal = await dwcpMigrate(wan, ws, "vms/bench/disk.img", "real", { keep: true });
    const rsyncDst = join(rsyncDir, "disk.img");
    const rReal = await timedInSite(wan, "a", "rsync", ["-W", "--sparse", image, rsyncUrl]);
    await sameBytes(image, rsyncDst, "rsync realistic");
    rmSync(rsyncDst);
    const zReal = await timedInSite(wan, "a", "rsync", ["-W", "--sparse", "-z", image, rsyncUrl]);
    await sameBytes(image, rsyncDst, "rsync -z realistic");
    log(`  ${secs({ dwcp: dReal, rsync: rReal, "rsync -z": zReal })}`);

    log(`[${name}] incremental: files written into the image with debugfs -w`);
    const old = join(work, "old.img");
    execFileSync("cp", ["--sparse=always", rsyncDst, old]);
    const written = writeFilesInto(image, work);
    const iRsync = await timedInSite(wan, "a", "rsync", ["--inplace", "--no-whole-file", image, rsyncUrl]);
    await sameBytes(image, rsyncDst, "rsync incremental");
    execFileSync("cp", ["--sparse=always", old, rsyncDst]);
    const izRsync = await timedInSite(wan, "a", "rsync", ["--inplace", "--no-whole-file", "-z", image, rsyncUrl]);
    await sameBytes(image, rsyncDst, "rsync -z incremental");
    const dInc = await dwcpMigrate(wan, ws, "vms/bench/disk.img", "incremental", {
      dir: "in-real",
      incremental: true,
    });
    const best = Math.min(iRsync.seconds, izRsync.seconds);
    log(`  ${secs({ dwcp: dInc, rsync: iRsync, "rsync -z": izRsync })}`);

    // What one fresh TCP connection takes for as many bytes as dwcp put on the link: the floor
    // of a single stream's handshake and congestion-window growth on this link.
    log(`[${name}] one TCP stream of the realistic and incremental runs' link bytes`);
    const tcpOfBytes = async (bytes: number): Promise<Run> => {
      const src = join(work, "tcp-same.img");
      await writeCryptoRandom(src, bytes);
      const run = await tcpCopy(wan, src, join(work, "tcp-same-dst.img"));
      rmSync(src);
      rmSync(join(work, "tcp-same-dst.img"));
      return run;
    };
    const tReal = await tcpOfBytes(dReal.linkBytes);
    const tInc = await tcpOfBytes(dInc.linkBytes);
    log(`  ${secs({ realistic: tReal, incremental: tInc })}`);

    return {
      incompressible_bytes: size,
      incompressible_goodput_ratio: (size * 8) / dRandom.seconds / (profile.rateMbit * 1e6),
      incompressible_ratio_vs_rsync: ratio(rRandom.seconds, dRandom.seconds),
      incompressible_ratio_vs_tcp: ratio(tRandom.seconds, dRandom.seconds),
      incompressible_dwcp_s: dRandom.seconds,
      incompressible_rsync_s: rRandom.seconds,
      incompressible_tcp_s: tRandom.seconds,
      incompressible_tcp_goodput_ratio: (size * 8) / tRandom.seconds / (profile.rateMbit * 1e6),
      realistic_ratio_vs_rsync: ratio(rReal.seconds, dReal.seconds),
      realistic_ratio_vs_rsync_z: ratio(zReal.seconds, dReal.seconds),
      realistic_logical_to_wire: IMAGE_BYTES / dReal.linkBytes,
      realistic_ratio_to_link_bound: dReal.seconds / linkBound(dReal.linkBytes),
      realistic_dwcp_s: dReal.seconds,
      realistic_rsync_s: rReal.seconds,
      realistic_rsync_z_s: zReal.seconds,
      realistic_dwcp_link_bytes: dReal.linkBytes,
      realistic_dwcp_wire_bytes: dReal.wireBytes,
      realistic_dwcp_logical_bytes: IMAGE_BYTES,
      realistic_dwcp_zero_skipped_bytes: dReal.zeroSkippedBytes,
      realistic_dwcp_compressed_in_bytes: dReal.compressedBytesIn,
      realistic_dwcp_compressed_out_bytes: dReal.compressedBytesOut,
      realistic_rsync_link_bytes: rReal.linkBytes,
      realistic_tcp_same_bytes_s: tReal.seconds,
      realistic_ratio_to_tcp_same_bytes: dReal.seconds / tReal.seconds,
      realistic_rsync_z_link_bytes: zReal.linkBytes,
      incremental_written_bytes: written,
      incremental_ratio_vs_rsync_best: ratio(best, dInc.seconds),
      incremental_ratio_to_link_bound: dInc.seconds / linkBound(dInc.linkBytes),
      incremental_dwcp_s: dInc.seconds,
      incremental_rsync_s: iRsync.seconds,
      incremental_rsync_z_s: izRsync.seconds,
      incremental_dwcp_link_bytes: dInc.linkBytes,
      incremental_dwcp_wire_bytes: dInc.wireBytes,
      incremental_dwcp_base_reused_bytes: dInc.baseReusedBytes,
      incremental_rsync_link_bytes: iRsync.linkBytes,
      incremental_rsync_z_link_bytes: izRsync.linkBytes,
      incremental_tcp_same_bytes_s: tInc.seconds,
      incremental_ratio_to_tcp_same_bytes: dInc.seconds / tInc.seconds,
    };
  });
}

async function main(): Promise<void> {
  const why = wanUnavailable();
  if (why) throw new Error(`bench:wan: ${why}`);
  if (!values.outage) {
    ensureTools();
    realisticImage();
  }
  const names = values.profile.split(",").filter(Boolean);
  for (const n of names)
    if (!(n in PROFILES)) throw new Error(`unknown profile ${n} (${Object.keys(PROFILES).join(", ")})`);
  for (const name of names as ProfileName[]) {
    const dir = mkdtempSync(join(tmpdir(), "dwcp-bench-wan-"));
    try {
      const result = values.outage ? await outageProfile(name, dir) : await benchProfile(name, dir);
      if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else log(JSON.stringify(result, null, 2));
    } finally {
      if (!values.keep) rmSync(dir, { recursive: true, force: true });
    }
  }
}

await main();
