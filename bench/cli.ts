// npm run bench:cli [-- --json] [--runs 10] [--migrations 1000] [--size 256M]   (figures on stderr)
// Start-up and round-trip cost of the `dwcp` command, spawned as a user runs it (node
// dist/cli/dwcp.js), medians of --runs each:
//   help    `dwcp --help`; baselines in the same run: `node -e 0`, and the same entry run from the
//           TypeScript sources through tsx (what every command paid before dist/).
//   status  `dwcp status --json` on an embedded stack holding --migrations tiny completed migrations;
//           baseline in the same run: folding every event in-process (what status did before summaries).
//   migrate `dwcp migrate --wait --json` of a --size generated image: wall time minus the
//           migration's own duration (its events' first to last), i.e. what the command adds.
// Targets: help <= 0.30 s, status <= 0.50 s, migrate overhead <= 0.35 s.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { parseSize } from "../cli/args.js";
import { EVT_STREAM } from "../services/common/layout.js";
import { messagesPerMigration, readSummaries } from "../services/common/summaries.js";
import { cliEventTrust, listMigrations, newId, publishCommand } from "../cli/client.js";
import { generateImage } from "../cli/image.js";
import { buildStart } from "../cli/migrate.js";
import { Stack } from "../cli/stack.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    runs: { type: "string", default: "10" },
    migrations: { type: "string", default: "1000" },
    size: { type: "string", default: "256M" },
  },
});
const RUNS = Number(values.runs);
const ROOT = resolve(import.meta.dirname, "..");
const ENTRY = join(ROOT, "dist", "cli", "dwcp.js");
/** Progress and figures go to stderr (with --json too); stdout carries only the JSON result. */
const say = (s: string): void => void process.stderr.write(`${s}\n`);

function spawnTimed(
  args: string[],
  env?: NodeJS.ProcessEnv,
): Promise<{ seconds: number; stdout: string; code: number | null }> {
  const t = performance.now();
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((r, reject) =>
    child.once("close", (code) => {
      if (code !== 0) reject(new Error(`${args.join(" ")} exited ${code}: ${stderr.slice(0, 500)}`));
      else r({ seconds: (performance.now() - t) / 1e3, stdout, code });
    }),
  );
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};

async function medianOf(label: string, args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) xs.push((await spawnTimed(args, env)).seconds);
  const m = median(xs);
  say(
    `${label.padEnd(36)} median ${m.toFixed(3)} s ` +
      `(min ${Math.min(...xs).toFixed(3)}, max ${Math.max(...xs).toFixed(3)})`,
  );
  return m;
}

const nodeBaseline = await medianOf("node -e 0", ["-e", "0"]);
const help = await medianOf("dwcp --help (dist)", [ENTRY, "--help"]);
const helpTsx = await medianOf("dwcp --help (sources through tsx)", [
  "--import",
  "tsx",
  join(ROOT, "cli", "dwcp.ts"),
  "--help",
]);

const dir = mkdtempSync(join(tmpdir(), "dwcp-bench-cli-"));
const stack = new Stack({ dataDir: dir, hosts: ["a", "b"], replication: false });
let result: Record<string, unknown> = {};
try {
  await stack.start();
  const cliEnv = { DWCP_NATS_URL: stack.url };
  const client = ["--data-dir", dir];
  // --migrations tiny migrations of one 64 KiB file, published at once, awaited to completion.
  const count = Number(values.migrations);
  mkdirSync(join(stack.root("a"), "tiny"), { recursive: true });
  writeFileSync(join(stack.root("a"), "tiny", "disk.img"), Buffer.alloc(64 * 1024, 7));
  const cli = await stack.connect("cli");
  const t0 = performance.now();
  for (let i = 0; i < count; i++)
    await publishCommand(
      cli,
      buildStart({
        vm: `tiny-${i}`,
        source: { host: "a", volumes: [{ path: "tiny/disk.img", kind: "disk" }] },
        destination: { host: "b", dir: `tiny/${i}` },
        migrationId: newId("tiny"),
      }),
    );
  const trust = cliEventTrust(dir);
  // Settled: every migration's summary is terminal and current (the coordinator's summaries only:
  // folding the ones in flight at every look would cost more than the migrations).
  for (;;) {
    const [summaries, counts] = await Promise.all([readSummaries(cli, trust), messagesPerMigration(cli, EVT_STREAM)]);
    const settled = [...summaries.values()].filter(
      (m) => ["completed", "failed", "rejected"].includes(m.state) && counts.get(m.migrationId) === m.messages,
    ).length;
    if (settled >= count) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  // Left open: closing it while the tail's pull is still in flight throws in the library's iterator.
  say(`${count} migrations settled in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  const status = await medianOf(
    `dwcp status --json (${count} migrations)`,
    [ENTRY, "status", "--json", ...client],
    cliEnv,
  );
  // Baseline: what status did before the coordinator's summaries, folding every event (in this
  // process, so without the command's start-up), once.
  const tf = performance.now();
  await listMigrations(cli, trust);
  const foldAll = (performance.now() - tf) / 1e3;
  say(`fold every event in-process (baseline)   ${foldAll.toFixed(3)} s; status is ${(status / foldAll).toFixed(3)}x`);

  // migrate --wait: wall time of the command minus the migration's own duration.
  const img = join(stack.root("a"), "vm", "disk.img");
  mkdirSync(join(stack.root("a"), "vm"), { recursive: true });
  await generateImage(img, { sizeBytes: parseSize("--size", values.size ?? "256M"), zeroFraction: 0.5, seed: 7 });
  const overheads: number[] = [];
  const engines: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const r = await spawnTimed(
      [
        ENTRY,
        "migrate",
        "--vm",
        "bench",
        "--from",
        "a:vm/disk.img",
        "--to",
        `b:out/${i}`,
        "--wait",
        "--json",
        ...client,
      ],
      cliEnv,
    );
    const outcome = JSON.parse(r.stdout) as { state: string; seconds: number };
    if (outcome.state !== "completed") throw new Error(`migration ${i} ${outcome.state}`);
    engines.push(outcome.seconds);
    overheads.push(r.seconds - outcome.seconds);
  }
  const overhead = median(overheads);
  say(
    `dwcp migrate --wait (${values.size})`.padEnd(37) +
      `median overhead ${overhead.toFixed(3)} s over engine ${median(engines).toFixed(3)} s`,
  );
  result = {
    runs: RUNS,
    nodeBaselineSeconds: nodeBaseline,
    helpSeconds: help,
    helpTsxSeconds: helpTsx,
    helpVsTsx: help / helpTsx,
    statusSeconds: status,
    statusMigrations: count,
    statusFoldEveryEventSeconds: foldAll,
    loadAverage: loadavg(),
    migrateSize: values.size,
    migrateEngineSeconds: median(engines),
    migrateOverheadSeconds: overhead,
    targets: { helpSeconds: 0.3, statusSeconds: 0.5, migrateOverheadSeconds: 0.35 },
    met: { help: help <= 0.3, status: status <= 0.5, migrateOverhead: overhead <= 0.35 },
  };
} finally {
  await stack.stop();
  rmSync(dir, { recursive: true, force: true });
}
if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else say(`help ${(result.helpVsTsx as number).toFixed(2)}x the tsx start-up; node itself ${nodeBaseline.toFixed(3)} s`);
process.exit(0); // the open client connection above
