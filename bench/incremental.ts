// npm run bench:incremental [-- --json] [--size 2G] [--fraction 0.01] [--chunk-size 64K] [--warmup 256M] [--keep]
// A random (incompressible) image is replicated once in full; then `fraction` of its 4 KiB pages
// are overwritten at random and the second sync is timed, against
// `rsync --no-whole-file --inplace -B4096` from the same changed source onto a copy of the old
// version, in the same run. The destination agent is a separate process reached over loopback
// TCP, as in a deployment; both tools start with their files in the page cache (source, rsync's
// basis file, dwcp's store). Wire bytes are
// framed bytes both ways for dwcp and rsync's "sent + received" for rsync.
// Before that, both dwcp processes replicate a separate small VM (`--warmup`, 0 for none): a full
// sync and three incremental ones, so the timed sync runs compiled code and reused buffers, as
// in an agent that has been syncing for a while. rsync is a fresh process every time.
// Before each timed run the bench's own writes (the generated image, rsync's copy of it, the
// changed pages) are flushed with sync(1): otherwise their writeback, which the kernel starts
// when they are 30 s old, lands in whichever run comes first.
// Last line: JSON {dwcp_s, rsync_s, wire_bytes, rsync_wire_bytes, changed_bytes, ...}.
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { randomFillSync, randomInt } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseSize } from "../cli/args.js";
import { sha256File } from "../cli/verify.js";
import { ensureLayout } from "#common/layout.js";
import { connectNats } from "#common/nats.js";
import { startNatsServer } from "#common/nats-server.js";
import { pickSnapshot, restoreFromStore } from "../services/replication/src/app/restore.js";
import { syncOnce, type SyncOptions } from "../services/replication/src/app/sync.js";
import { ReplicationLog } from "../services/replication/src/infra/replication-log.js";
import { connectAgent } from "../services/replication/src/infra/tcp.js";
import { spawnAgent } from "./support/agent-process.js";

const { values } = parseArgs({
  options: {
    size: { type: "string", default: "2G" },
    fraction: { type: "string", default: "0.01" },
    /** Bytes per stored chunk (default: the sync's default, 64 KiB). */
    "chunk-size": { type: "string" },
    keep: { type: "boolean", default: false },
    warmup: { type: "string", default: "256M" },
    "no-verify": { type: "boolean", default: false },
    /** Accepted for symmetry with the other benches: the last line is always JSON. */
    json: { type: "boolean", default: false },
  },
});
const size = parseSize("--size", values.size);
const warmupBytes = values.warmup === "0" ? 0 : parseSize("--warmup", values.warmup);
const PAGE = 4096;
const log = (s: string): boolean => process.stderr.write(`${s}\n`);

/** Cryptographically random bytes: nothing for lz4 or dedup to find. */
async function randomImage(path: string, bytes: number): Promise<void> {
  const fh = await open(path, "w");
  const buf = Buffer.allocUnsafe(8 << 20);
  for (let off = 0; off < bytes; off += buf.length) {
    const n = Math.min(buf.length, bytes - off);
    randomFillSync(buf, 0, n);
    await fh.write(buf, 0, n, off);
  }
  await fh.close();
}

/** Overwrites distinct random pages; returns how many bytes changed. */
async function changePages(path: string, fraction: number, bytes: number): Promise<number> {
  const pages = Math.floor(bytes / PAGE);
  const want = Math.round(pages * fraction);
  const chosen = new Set<number>();
  while (chosen.size < want) chosen.add(randomInt(pages));
  const fh = await open(path, "r+");
  const buf = Buffer.alloc(PAGE);
  for (const p of [...chosen].sort((a, b) => a - b)) {
    randomFillSync(buf);
    await fh.write(buf, 0, PAGE, p * PAGE);
  }
  await fh.close();
  return want * PAGE;
}

function rsyncTimed(src: string, dst: string): { seconds: number; wire: number } {
  const t = process.hrtime.bigint();
  const r = spawnSync("rsync", ["--no-whole-file", "--inplace", "-B4096", "--stats", src, dst], { encoding: "utf8" });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`rsync failed: ${r.stderr}`);
  const num = (label: string): number =>
    Number((new RegExp(`${label}: ([\\d,]+)`).exec(r.stdout)?.[1] ?? "0").replaceAll(",", ""));
  return { seconds, wire: num("Total bytes sent") + num("Total bytes received") };
}

const dir = mkdtempSync(join(tmpdir(), "dwcp-bench-incr-"));
const secret = "bench-secret-0123456789abcdef";
const server = await startNatsServer({ storeDir: join(dir, "nats") });
const nats = await connectNats(server.url, "bench-incremental");
await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
const agent = await spawnAgent(join(dir, "b"), secret);
try {
  mkdirSync(join(dir, "a"));
  const src = join(dir, "a", "disk.img");
  const rsyncDst = join(dir, "rsync-disk.img");
  log(`generating ${values.size} random image ...`);
  await randomImage(src, size);
  copyFileSync(src, rsyncDst);
  const base: Omit<SyncOptions, "transport"> = {
    vm: "bench",
    sources: [src],
    sourceHost: "a",
    destinationHost: "b",
    storePath: join(dir, "b", ".dwcp-store"),
    log: new ReplicationLog(nats),
    stateDir: join(dir, "a", ".dwcp-repl"),
    ...(values["chunk-size"] ? { chunkSizeBytes: parseSize("--chunk-size", values["chunk-size"]) } : {}),
  };
  const sync = async (o: Partial<SyncOptions> = {}) => {
    const link = await connectAgent({ host: "127.0.0.1", port: agent.port, secret });
    try {
      return await syncOnce({ ...base, ...o, transport: link });
    } finally {
      await link.close();
    }
  };
  const warmups: number[] = [];
  if (warmupBytes > 0) {
    const warm = join(dir, "a", "warmup.img");
    await randomImage(warm, warmupBytes);
    for (let k = 0; k < 4; k++) {
      if (k > 0) await changePages(warm, Number(values.fraction), warmupBytes);
      warmups.push((await sync({ vm: "warmup", sources: [warm] })).seconds);
    }
    log(`warm-up (${values.warmup} VM, full + 3 incremental): ${warmups.join(", ")} s`);
  }
  const full = await sync();
  log(`full sync: ${full.seconds.toFixed(2)} s, wire ${full.wireBytes}`);
  const changed = await changePages(src, Number(values.fraction), size);
  // Both tools start with their files in the page cache: the source, rsync's basis file, and
  // dwcp's store (its equivalent of the basis file).
  const packs = readdirSync(join(base.storePath, "packs")).map((f) => join(base.storePath, "packs", f));
  execFileSync("cat", [src, rsyncDst, ...packs], { stdio: ["ignore", "ignore", "inherit"], maxBuffer: 0 });
  execFileSync("sync");
  const second = await sync();
  const phases = JSON.stringify(second.phases, (_k, v: unknown) => (typeof v === "number" ? Math.round(v) : v));
  log(
    `incremental sync: ${second.seconds.toFixed(2)} s, wire ${second.wireBytes}, changed ${changed}; ` +
      `phases ms ${phases}`,
  );
  execFileSync("sync");
  const rs = rsyncTimed(src, rsyncDst);
  const noop = await sync(); // nothing changed: the floor (read + fingerprint + commit)
  log(`unchanged sync: ${noop.seconds.toFixed(2)} s`);
  log(`rsync: ${rs.seconds.toFixed(2)} s, wire ${rs.wire}`);
  let verified: boolean | undefined;
  if (!values["no-verify"]) {
    const out = join(dir, "restored");
    await restoreFromStore(pickSnapshot((await base.log.read("bench")).state, {}), { vm: "bench", toDir: out });
    verified = (await sha256File(join(out, "disk.img"))) === (await sha256File(src));
  }
  process.stdout.write(
    `${JSON.stringify({
      size_bytes: size,
      changed_bytes: changed,
      dwcp_s: second.seconds,
      rsync_s: rs.seconds,
      wire_bytes: second.wireBytes,
      rsync_wire_bytes: rs.wire,
      ratio_time: second.seconds / rs.seconds,
      ratio_wire: second.wireBytes / changed,
      warmup_bytes: warmupBytes,
      warmup_s: warmups,
      full_sync_s: full.seconds,
      unchanged_sync_s: noop.seconds,
      phases_ms: second.phases,
      chunks_sent: second.chunksSent,
      full_resends: second.fullResends,
      verified,
    })}\n`,
  );
} finally {
  await agent.kill("SIGTERM");
  await nats.nc.close();
  await server.stop();
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
}
