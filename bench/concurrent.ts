// npm run bench:concurrent [-- --json] [--n 1000] [--coordinators 1] [--replicas 1|3] [--prof DIR] [--heap-mb MB]
//                          [--warmup K]
// N migrations of one 64 KiB volume each, a → b, on the embedded stack `dwcp up` starts (its own
// nats-server with users and mTLS, a coordinator, movers for hosts a and b, signed events).
// A plain NATS client with the cli role's credentials publishes the N StartMigration commands as
// fast as JetStream acks them (a window of PubAcks in flight) and counts terminal events on
// dwcp.evt.migration.>; time runs from the first publish to the last terminal event, a
// migration's latency from its publish to its terminal event. Every destination is compared with
// its source. --replicas 3 runs the stack on a cluster of three local nats-servers (free ports, a
// store dir each, stopped by PID) with every stream and work queue at R3. --prof DIR writes a
// --cpu-prof profile of every service into DIR. --heap-mb MB caps every service's V8 old space
// (--max-old-space-size): without a cap V8 lets the heap grow far past what is live before it
// collects, which is most of a coordinator's RSS at 10,000 migrations. --warmup K first runs K
// migrations of the same volumes into another directory and waits for them all to end, so that
// the measured N meet services that have compiled their hot paths, as a long-running deployment's
// have; the default (0) measures services fresh from start-up.
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Stack } from "../cli/stack.js";
import { cpuSeconds, peakRssBytes } from "./lib-transfer.js";
import { runConcurrent, writeVolumes } from "./support/concurrent-migrations.js";
import { readFile } from "node:fs/promises";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    n: { type: "string", default: "1000" },
    coordinators: { type: "string", default: "1" },
    replicas: { type: "string", default: "1" },
    prof: { type: "string" },
    "heap-mb": { type: "string" },
    warmup: { type: "string", default: "0" },
    keep: { type: "boolean", default: false },
  },
});
const n = Number(values.n);
const coordinators = Number(values.coordinators);
const replicas = Number(values.replicas);
const log = (s: string): void => void process.stderr.write(`${s}\n`);

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

async function main(): Promise<void> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`--n must be a positive integer, got "${values.n}"`);
  if (replicas !== 1 && replicas !== 3) throw new Error(`--replicas must be 1 or 3, got "${values.replicas}"`);
  const warmup = Number(values.warmup);
  if (!(Number.isInteger(warmup) && warmup >= 0 && warmup <= n))
    throw new Error(`--warmup must be a whole number from 0 to --n, got "${values.warmup}"`);
  const dataDir = mkdtempSync(join(tmpdir(), "dwcp-bench-concurrent-"));
  const heapMb = values["heap-mb"] === undefined ? undefined : Number(values["heap-mb"]);
  if (heapMb !== undefined && !(Number.isInteger(heapMb) && heapMb >= 64))
    throw new Error(`--heap-mb must be a whole number of MiB >= 64, got "${values["heap-mb"]}"`);
  const nodeFlags = [
    ...(values.prof ? [`--cpu-prof --cpu-prof-dir=${resolve(values.prof)}`] : []),
    ...(heapMb !== undefined ? [`--max-old-space-size=${heapMb}`] : []),
  ];
  const env = nodeFlags.length > 0 ? { DWCP_NODE_FLAGS: nodeFlags.join(" ") } : {};
  const stack = new Stack({ dataDir, hosts: ["a", "b"], replication: false, env, replicas });
  try {
    await stack.start();
    for (let i = 1; i < coordinators; i++) await stack.startCoordinator();
    log(`writing ${n} volumes of 64 KiB...`);
    await writeVolumes(stack, n);
    const procs = {
      ...Object.fromEntries(stack.servers.map((s, i) => [i === 0 ? "nats_server" : `nats_server_${i}`, s.pid])),
      ...Object.fromEntries(stack.coordinators.map((c, i) => [`coordinator_${i}`, c.child.pid])),
      mover_a: stack.movers.get("a")?.child.pid,
      mover_b: stack.movers.get("b")?.child.pid,
    };
    const client = await stack.connect("cli", "bench-concurrent");
    const { r, cpu0 } = await (async () => {
      if (warmup > 0) {
        log(`warming up with ${warmup} migrations...`);
        const w = await runConcurrent(stack, client, { n: warmup, destDir: "in/warmup" });
        if (w.mismatched > 0 || (w.outcomes["MigrationCompleted"] ?? 0) !== warmup)
          throw new Error(`the warm-up did not complete: ${JSON.stringify(w.outcomes)}, ${w.mismatched} mismatched`);
      }
      const cpu0 = await cpuOf(procs);
      const r = await runConcurrent(stack, client, {
        n,
        progress: values.json ? undefined : (ended, total) => log(`${ended}/${total} ended`),
      });
      return { r, cpu0 };
    })().finally(() => client.nc.close());
    const cpu1 = await cpuOf(procs);
    const coordinator = stack.coordinators[0]?.child.pid ?? 0;
    const out = {
      n,
      coordinators,
      replicas,
      ...(warmup > 0 ? { warmup } : {}),
      ...(heapMb !== undefined ? { heap_mb: heapMb } : {}),
      migrations_per_s: Number(r.migrationsPerSec.toFixed(1)),
      seconds: Number(r.seconds.toFixed(2)),
      p50_ms: Math.round(r.p50Ms),
      p99_ms: Math.round(r.p99Ms),
      max_ms: Math.round(r.maxMs),
      coordinator_rss_bytes: await rssBytes(coordinator),
      coordinator_peak_rss_bytes: await peakRssBytes(coordinator),
      events_per_migration: Number(r.eventsPerMigration.toFixed(2)),
      outcomes: r.outcomes,
      mismatched: r.mismatched,
      cpu_seconds: Object.fromEntries(
        Object.keys(procs).map((k) => [k, Number(((cpu1[k] ?? 0) - (cpu0[k] ?? 0)).toFixed(2))]),
      ),
      machine: `${cpus().length} vCPU ${cpus()[0]?.model ?? "unknown"}`,
    };
    if (values.json) process.stdout.write(`${JSON.stringify(out)}\n`);
    else log(JSON.stringify(out, null, 2));
    if (r.mismatched > 0 || (r.outcomes["MigrationCompleted"] ?? 0) !== n) process.exitCode = 1;
  } finally {
    await stack.stop();
    if (!values.keep) rmSync(dataDir, { recursive: true, force: true });
    else log(`kept ${dataDir}`);
  }
}

async function cpuOf(procs: Record<string, number | undefined>): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [k, pid] of Object.entries(procs)) if (pid !== undefined) out[k] = await cpuSeconds(pid);
  return out;
}

main().catch((err: unknown) => {
  log(String((err as Error).stack ?? err));
  process.exit(1);
});
