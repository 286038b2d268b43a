// npm run bench:tunnel [-- --json] [--size 1G] [--runs 3]
// One live-migration tunnel alone on loopback, as a live migration uses it: a writer process
// stands in for the source QEMU (it writes --size of random bytes, 1 MiB at a time, to the source
// mover's unix socket), the source mover carries them through a tunnel to the destination mover's
// data server (mutual TLS with the certificates `dwcp up` provisions), which writes them to the
// destination's unix socket, read by a reader in that process. Two ways in the same run,
// alternating: sealed (the source → destination bytes as sealed records, pumped by a native
// thread at each end) and spliced (both directions through Node's TLS streams, the tunnel's
// `sealed: false`). Time runs from the first byte written to the last one read; CPU is each
// process's own (user + system, every thread), writer and reader included.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { parseSize } from "../cli/args.js";
import { startDataServer } from "../services/mover/src/infra/data-channel/server.js";
import { listenTunnel } from "../services/mover/src/infra/data-channel/tunnel.js";
import { provision } from "#common/credentials/provision.js";
import { linkTlsOf } from "../test/support/data-channel.js";

const silent = pino({ level: "silent" });
const secret = Buffer.alloc(32, 7);

const cpuMs = (c: NodeJS.CpuUsage): number => (c.user + c.system) / 1000;

/** The destination: a data server expecting tunnels of migration "m" to a reader's socket; one line per transfer. */
async function destination(dir: string): Promise<void> {
  const pki = await provision(join(dir, "pki"), { hosts: ["a", "b"] });
  const server = await startDataServer({
    listenHost: "127.0.0.1",
    listenPort: 0,
    secret,
    roots: [dir],
    host: "b",
    log: silent,
    tls: linkTlsOf(pki, "mover-b"),
  });
  const sink = join(dir, "sink.sock");
  const reader = createServer({ allowHalfOpen: true }, (s) => {
    let bytes = 0;
    let cpu: NodeJS.CpuUsage | undefined;
    s.on("data", (d: Buffer) => {
      cpu ??= process.cpuUsage();
      bytes += d.length;
    });
    s.on("end", () => {
      const used = process.cpuUsage(cpu);
      process.stdout.write(`${JSON.stringify({ bytes, at: Date.now(), cpuMs: cpuMs(used) })}\n`);
      s.end();
    });
  });
  await new Promise<void>((r) => reader.listen(sink, () => r()));
  server.tunnels.allow("m", "a", { migration: sink });
  process.stdout.write(`${JSON.stringify({ address: server.address })}\n`);
}

if (process.argv[2] === "--destination") {
  await destination(process.argv[3] as string);
} else {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      size: { type: "string", default: "1G" },
      runs: { type: "string", default: "3" },
    },
  });
  const size = parseSize("--size", values.size);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be an integer >= 1, got "${values.runs}"`);
  const dir = mkdtempSync(join(tmpdir(), "dwcp-bench-tunnel-"));
  const say = (s: string): boolean => process.stderr.write(`${s}\n`);
  const before = loadavg();
  const dest = spawn(process.execPath, [...process.execArgv, process.argv[1] as string, "--destination", dir], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const lines = createInterface({ input: dest.stdout })[Symbol.asyncIterator]();
    const nextLine = async (): Promise<Record<string, number | string>> => {
      const l = await lines.next();
      if (l.done === true) throw new Error("the destination process exited");
      return JSON.parse(l.value) as Record<string, number | string>;
    };
    const { address } = (await nextLine()) as { address: string };
    const pki = await provision(join(dir, "pki"), { hosts: ["a", "b"] });
    const tls = { tls: linkTlsOf(pki, "mover-a"), destHost: "b" };
    const block = randomBytes(1024 * 1024);
    const once = async (sealed: boolean, i: number): Promise<{ s: number; srcCpuMs: number; dstCpuMs: number }> => {
      const o = { address, secret, sourceHost: "a", migrationId: "m", channel: "migration", tls, sealed };
      const listener = await listenTunnel(join(dir, `src-${i}.sock`), o, silent);
      try {
        const s = connect(listener.path);
        await new Promise((r) => s.once("connect", r));
        const cpu = process.cpuUsage();
        const t0 = Date.now();
        for (let at = 0; at < size; at += block.length) {
          const piece = block.subarray(0, Math.min(block.length, size - at));
          if (!s.write(piece)) await new Promise((r) => s.once("drain", r));
        }
        s.end();
        const done = await nextLine();
        const srcCpuMs = cpuMs(process.cpuUsage(cpu));
        if (done.bytes !== size) throw new Error(`the reader got ${done.bytes} bytes of ${size}`);
        s.destroy();
        return { s: ((done.at as number) - t0) / 1000, srcCpuMs, dstCpuMs: done.cpuMs as number };
      } finally {
        await listener.close();
      }
    };
    const results: Record<"sealed" | "spliced", { s: number; srcCpuMs: number; dstCpuMs: number }[]> = {
      sealed: [],
      spliced: [],
    };
    for (let r = 0; r < runs; r++) {
      for (const mode of r % 2 === 0 ? (["sealed", "spliced"] as const) : (["spliced", "sealed"] as const)) {
        const got = await once(mode === "sealed", 2 * r + (mode === "sealed" ? 0 : 1));
        results[mode].push(got);
        say(`run ${r + 1}/${runs} ${mode}: ${got.s.toFixed(3)} s, ${Math.round(size / 1e6 / got.s)} MB/s`);
      }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    const r3 = (x: number): number => Math.round(x * 1000) / 1000;
    const figures = (mode: "sealed" | "spliced") => {
      const xs = results[mode];
      const gb = size / 1e9;
      return {
        s: r3(median(xs.map((x) => x.s))),
        mb_per_s: Math.round(size / 1e6 / median(xs.map((x) => x.s))),
        source_cpu_s_per_gb: r3(median(xs.map((x) => x.srcCpuMs)) / 1000 / gb),
        destination_cpu_s_per_gb: r3(median(xs.map((x) => x.dstCpuMs)) / 1000 / gb),
        runs_s: xs.map((x) => r3(x.s)),
      };
    };
    const sealed = figures("sealed");
    const spliced = figures("spliced");
    const out = {
      date: new Date().toISOString(),
      cpu: cpus()[0]?.model ?? "unknown",
      cpus: cpus().length,
      load_avg_before: before.map((x) => Math.round(x * 100) / 100),
      load_avg_after: loadavg().map((x) => Math.round(x * 100) / 100),
      bytes: size,
      runs,
      sealed,
      spliced,
      sealed_speedup_vs_spliced: r3(spliced.s / sealed.s),
    };
    if (values.json) process.stdout.write(`${JSON.stringify(out)}\n`);
    else {
      for (const [name, f] of [
        ["sealed: ", sealed],
        ["spliced:", spliced],
      ] as const)
        say(`${name} ${f.mb_per_s} MB/s, CPU s/GB ${f.source_cpu_s_per_gb} + ${f.destination_cpu_s_per_gb}`);
      say(`sealed / spliced: ${out.sealed_speedup_vs_spliced}x`);
    }
  } finally {
    dest.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}
