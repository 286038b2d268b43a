// npm run bench:data-channel [-- --json] [--size 2G] [--chunk 4M] [--batch 64M] [--concurrency 2] [--only TLS]
// The data channel alone, in one process: a generated incompressible file sent batch by batch
// (each fsynced at the destination, as in a migration) through sendBatch() to a data server on
// loopback, for each destination path: native recv into chunk buffers or Node's stream reads;
// default writes (O_DIRECT for segments of 1 MiB and more, so every 4 MiB segment of this file)
// or the page cache only. Baseline in the same run: the raw sendfile transfer of
// bench/lib-transfer.ts (no framing, checksums or fsync). Last variant: the same over TLS 1.3 with
// mutual authentication (the certificates `dwcp up` provisions; bulk data in sealed AES-GCM
// records, native on the libuv pool, under keys exported from the session; no sendfile),
// against the plaintext default-writes variant of the same run. No NATS, coordinator or verify
// pass: bench:migrate measures those.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { parseSize } from "../cli/args.js";
import { generateRandomFile } from "../cli/image.js";
import { sendBatch } from "../services/mover/src/infra/data-channel/client.js";
import { startDataServer } from "../services/mover/src/infra/data-channel/server.js";
import { rawSendfile } from "./lib-transfer.js";
import { provision, type Provisioned } from "#common/credentials/provision.js";
import { linkTlsOf } from "../test/support/data-channel.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    size: { type: "string", default: "2G" },
    chunk: { type: "string", default: "4M" },
    batch: { type: "string", default: "64M" },
    concurrency: { type: "string", default: "2" },
    /** Run only the variants whose name contains this (e.g. "TLS"). */
    only: { type: "string" },
  },
});
const size = parseSize("--size", values.size);
const chunk = parseSize("--chunk", values.chunk);
const batchBytes = parseSize("--batch", values.batch);
const concurrency = Number(values.concurrency);
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const silent = pino({ level: "silent" });

interface Variant {
  name: string;
  env: Record<string, string>;
  /** TLS 1.3 with mutual authentication on the data channel. */
  tls?: boolean;
}
const VARIANTS: Variant[] = [
  { name: "native recv, default writes", env: { DWCP_NATIVE_RECV: "on", DWCP_DIRECT_IO: "auto" } },
  { name: "native recv, page cache only", env: { DWCP_NATIVE_RECV: "on", DWCP_DIRECT_IO: "off" } },
  { name: "Node stream reads, page cache", env: { DWCP_NATIVE_RECV: "off", DWCP_DIRECT_IO: "off" } },
  { name: "TLS 1.3 mTLS, default writes", env: { DWCP_NATIVE_RECV: "on", DWCP_DIRECT_IO: "auto" }, tls: true },
];

async function transfer(dir: string, src: string, v: Variant, run: number, pki: Provisioned): Promise<number> {
  Object.assign(process.env, v.env); // read when the server starts and when a file opens
  const secret = randomBytes(32);
  const server = await startDataServer({
    host: "b",
    listenHost: "127.0.0.1",
    listenPort: 0,
    secret,
    roots: [dir],
    log: silent,
    nativeRecv: v.env["DWCP_NATIVE_RECV"] !== "off",
    ...(v.tls === true ? { tls: linkTlsOf(pki, "mover-b") } : {}),
  });
  const tls = v.tls === true ? { tls: { tls: linkTlsOf(pki, "mover-a"), destHost: "b" } } : {};
  const perBatch = Math.max(1, Math.floor(batchBytes / chunk));
  const chunks = Math.ceil(size / chunk);
  const batches = Math.ceil(chunks / perBatch);
  let next = 0;
  const started = process.hrtime.bigint();
  try {
    const worker = async (): Promise<void> => {
      for (let b = next++; b < batches; b = next++) {
        const firstChunk = b * perBatch;
        await sendBatch({
          address: server.address,
          secret,
          ...tls,
          sourceHost: "a",
          migrationId: `bench-${run}`,
          batch: b,
          attempt: 0,
          sourcePath: src,
          destDir: `run-${run}`,
          destName: "out.img",
          volumeSizeBytes: size,
          chunkSizeBytes: chunk,
          firstChunk,
          chunkCount: Math.min(perBatch, chunks - firstChunk),
          log: silent,
        });
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return Number(process.hrtime.bigint() - started) / 1e9;
  } finally {
    await server.close();
    rmSync(join(dir, `run-${run}`), { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-bench-dc-"));
  try {
    const src = join(dir, "random.img");
    log(`generating ${values.size} of random bytes...`);
    await generateRandomFile(src, size);
    const raw_sendfile_s = await rawSendfile(src, join(dir, "raw.img"));
    rmSync(join(dir, "raw.img"));
    const results: Record<string, number> = {};
    let run = 0;
    const pki = await provision(join(dir, "pki"), { hosts: ["a", "b"] });
    for (const v of VARIANTS.filter((x) => x.name.includes(values.only ?? ""))) {
      results[v.name] = await transfer(dir, src, v, run++, pki);
    }
    const js = results["Node stream reads, page cache"] ?? NaN;
    log(
      `\n${values.size} incompressible, ${values.chunk} chunks, ` +
        `${values.batch} batches x ${concurrency}, fsync per batch`,
    );
    log(`${"path".padEnd(36)} seconds    MB/s  vs Node reads  vs raw sendfile`);
    log(
      `${"raw sendfile (no fsync)".padEnd(36)} ${raw_sendfile_s.toFixed(3).padStart(7)} ` +
        `${(size / raw_sendfile_s / 1e6).toFixed(0).padStart(7)}`,
    );
    for (const [name, s] of Object.entries(results)) {
      log(
        `${name.padEnd(36)} ${s.toFixed(3).padStart(7)} ${(size / s / 1e6).toFixed(0).padStart(7)} ` +
          `${(js / s).toFixed(2).padStart(13)}x ${(raw_sendfile_s / s).toFixed(2).padStart(15)}x`,
      );
    }
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({
          bytes: size,
          chunk_bytes: chunk,
          batch_bytes: batchBytes,
          concurrency,
          raw_sendfile_s,
          native_recv_s: results["native recv, default writes"],
          native_recv_page_cache_s: results["native recv, page cache only"],
          node_reads_s: js,
          tls_s: results["TLS 1.3 mTLS, default writes"],
          cpu: cpus()[0]?.model,
        })}\n`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  log(`bench:data-channel failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
