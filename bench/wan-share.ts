// npm run bench:wan-share [-- --json] [--profile continental] [--migrations 20] [--size 48M]
//                         [--weights 1,3] [--link-rate-pct 95] [--batch 4M] [--concurrency N]
// Many migrations sharing one emulated WAN link (test/wan/), as root: `--migrations` migrations of
// `--size` random bytes each, started at once from site a to site b, their weights taken in turn
// from `--weights`, with the movers told the link's rate (DWCP_LINK_RATE, `--link-rate-pct` of the
// profile's rate). Measured:
//   aggregate: the data bytes delivered while every migration was backlogged (had at least its
//     dispatch window of batches left to send), over that window's length, against the link's
//     rate (and the bytes tbf passed towards b in the whole run over the whole run's time);
//   weights: in the same window, each weight class's mean rate per migration divided by the
//     lightest class's, against the ratio of their weights.
// "Delivered" is what the destination acknowledged, chunk by chunk: the source mover's progress
// reports (every 250 ms per batch) and ChunkBatchTransferred events, sampled every 250 ms.
// `--batch` sets the migrations' batch size (default: the migrations' default). Compression is
// off: random bytes do not compress, and the figure is the link's sharing, not the codec's.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { EventStore } from "#common/event-store.js";
import { DEFAULT_BATCH_BYTES } from "#schemas/index.js";
import { dispatchWindow } from "../services/coordinator/src/domain/migration/window.js";
import { parseSize } from "../cli/args.js";
import { buildStart, runMigration } from "../cli/migrate.js";
import { PROFILES, startWan, wanUnavailable, type ProfileName } from "../test/wan/wan.js";
import { startWanStack, type WanStack } from "../test/wan/wan-stack.js";
import { writeCryptoRandom } from "./support/random-file.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    profile: { type: "string", default: "continental" },
    migrations: { type: "string", default: "20" },
    size: { type: "string", default: "48M" },
    batch: { type: "string" },
    weights: { type: "string", default: "1,3" },
    "link-rate-pct": { type: "string", default: "95" },
    concurrency: { type: "string" },
  },
});
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const count = Number(values.migrations);
const size = parseSize("--size", values.size);
const batch = values.batch === undefined ? undefined : parseSize("--batch", values.batch);
const weights = values.weights.split(",").map(Number);
const ratePct = Number(values["link-rate-pct"]);
if (!Number.isInteger(count) || count < 2 || count > 200) throw new Error("--migrations: 2..200");
if (weights.some((w) => !Number.isInteger(w) || w < 1 || w > 1000)) throw new Error("--weights: integers 1..1000");
if (!(ratePct > 0 && ratePct <= 100)) throw new Error("--link-rate-pct: 1..100");
const profileName = values.profile as ProfileName;
const profile = PROFILES[profileName];
if (!profile) throw new Error(`--profile: one of ${Object.keys(PROFILES).join(", ")}`);

async function main(): Promise<void> {
  const why = wanUnavailable();
  if (why) throw new Error(`the emulated WAN cannot run here: ${why}`);
  const linkBytesPerSec = (profile.rateMbit * 1e6) / 8;
  const wan = await startWan({ profile, sites: ["a", "b"], hostSite: "a" });
  let ws: WanStack | undefined;
  const work = mkdtempSync(join(tmpdir(), "dwcp-wan-share-"));
  try {
    ws = await startWanStack(wan, wan.sites, {
      env: {
        DWCP_LINK_RATE: String(Math.floor((linkBytesPerSec * ratePct) / 100)),
        ...(values.concurrency ? { DWCP_CONCURRENCY: values.concurrency } : {}),
      },
    });
    const srcDir = join(ws.stack.root("a"), "vms/share");
    mkdirSync(srcDir, { recursive: true });
    const ids = Array.from({ length: count }, (_, i) => `share-${i}`);
    const weightOf = (i: number): number => weights[i % weights.length] ?? 1;
    for (const [i] of ids.entries()) await writeCryptoRandom(join(srcDir, `m${i}.img`), size);
    execFileSync("sync"); // the images reach the disk before the clock starts

    // Bytes acknowledged per migration: per batch, the latest progress report's count (every
    // 250 ms while it runs) or, once done, its ChunkBatchTransferred event's; sampled every 250 ms.
    const acked = new Map<string, Map<number, number>>(ids.map((id) => [id, new Map()]));
    const note = (id: string, batch: number, bytes: number): void => {
      const m = acked.get(id);
      if (m) m.set(batch, Math.max(m.get(batch) ?? 0, bytes));
    };
    const progress = ws.stack.nats.nc.subscribe("dwcp.progress.>", {
      callback: (_err, m) => {
        const p = m.json<{ migrationId: string; batch: number; bytes: number }>();
        note(p.migrationId, p.batch, p.bytes);
      },
    });
    const store = new EventStore(ws.stack.nats.js, ws.stack.nats.jsm);
    const tail = await store.tail({
      filter: "dwcp.evt.migration.>",
      onEvent: (e) => {
        if (e.event.type === "ChunkBatchTransferred") note(e.event.migrationId, e.event.batch, e.event.bytes);
      },
    });
    const samples: Array<{ at: number; bytes: number[] }> = [];
    const sampler = setInterval(() => {
      const bytes = ids.map((id) => [...(acked.get(id)?.values() ?? [])].reduce((a, b) => a + b, 0));
      samples.push({ at: Date.now(), bytes });
    }, 250);
    const before = await wan.bytesTo("b");
    const t0 = Date.now();
    log(
      `[${profileName}] ${count} migrations of ${values.size}, weights ${weights.join(",")}, ` +
        `DWCP_LINK_RATE ${ratePct}%`,
    );
    const results = await Promise.all(
      ids.map((id, i) =>
        runMigration(
          ws!.stack.nats,
          buildStart({
            vm: id,
            migrationId: id,
            source: { host: "a", volumes: [{ path: `vms/share/m${i}.img`, kind: "disk" }] },
            destination: { host: "b", dir: `share/${id}` },
            options: { weight: weightOf(i), compression: "none", ...(batch ? { batchSizeBytes: batch } : {}) },
          }),
          { timeoutMs: 3_600_000 },
        ).then((r) => ({ ...r, endedAt: Date.now() })),
      ),
    );
    const totalS = (Date.now() - t0) / 1000;
    const linkBytes = (await wan.bytesTo("b")) - before;
    clearInterval(sampler);
    progress.unsubscribe();
    tail.stop();
    for (const r of results) if (r.state !== "completed") throw new Error(`${r.migrationId} ${r.state}: ${r.reason}`);

    // The window in which every migration was backlogged: from the first sample in which each
    // had bytes acknowledged to the last one in which each still had at least its dispatch
    // window of batches to send (the coordinator keeps that many in the work queue; with fewer
    // left a migration no longer asks for its whole share).
    const batchBytes = batch ?? DEFAULT_BATCH_BYTES;
    const backlogged = (x: { bytes: number[] }): boolean =>
      x.bytes.every((b, i) => size - b >= dispatchWindow(weightOf(i), batchBytes) * batchBytes);
    const start = samples.find((x) => x.bytes.every((b) => b > 0));
    const end = samples.filter((x) => start !== undefined && x.at > start.at && backlogged(x)).at(-1);
    if (!start || !end || !(end.at > start.at))
      throw new Error("no window with every migration backlogged: use more data per migration or smaller batches");
    const windowS = (end.at - start.at) / 1000;
    const inWindow = (i: number): number => (end.bytes[i] ?? 0) - (start.bytes[i] ?? 0);
    const perClass = new Map<number, number[]>();
    for (const [i] of ids.entries()) {
      const list = perClass.get(weightOf(i)) ?? [];
      list.push(inWindow(i) / windowS);
      perClass.set(weightOf(i), list);
    }
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const lightest = Math.min(...weights);
    const lightRate = mean(perClass.get(lightest) ?? []);
    const classes = [...perClass].map(([w, rates]) => {
      const shareRatio = mean(rates) / lightRate;
      const expected = w / lightest;
      return {
        weight: w,
        migrations: rates.length,
        mean_MBps: mean(rates) / 1e6,
        min_MBps: Math.min(...rates) / 1e6,
        max_MBps: Math.max(...rates) / 1e6,
        ratio_to_lightest: shareRatio,
        expected_ratio: expected,
        deviation_pct: (Math.abs(shareRatio - expected) / expected) * 100,
      };
    });
    const windowBytes = ids.reduce((n, _id, i) => n + inWindow(i), 0);
    const out = {
      profile: profileName,
      link_mbps: profile.rateMbit,
      rtt_ms: profile.rttMs,
      loss_pct: profile.lossPct,
      migrations: count,
      size_bytes: size,
      batch_bytes: batch ?? "default",
      link_rate_setting_pct: ratePct,
      mover_concurrency: values.concurrency ?? "default",
      total_s: totalS,
      window_s: windowS,
      window_goodput_ratio: windowBytes / windowS / linkBytesPerSec,
      run_link_utilisation: linkBytes / totalS / linkBytesPerSec,
      run_goodput_ratio: (count * size) / totalS / linkBytesPerSec,
      weight_classes: classes,
      weights_max_deviation_pct: Math.max(...classes.map((c) => c.deviation_pct)),
      cpus: cpus()[0]?.model,
    };
    if (values.json) process.stdout.write(`${JSON.stringify(out)}\n`);
    else log(JSON.stringify(out, null, 2));
  } finally {
    await ws?.stop();
    await wan.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
