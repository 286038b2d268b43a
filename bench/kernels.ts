// Kernel throughput bench: every kernel on 64 MiB and 256 KiB buffers for each path (SIMD,
// SIMD without AVX-512, scalar C++, TypeScript), next to the single-thread memory read
// bandwidth measured in the same run (an AVX2 OR-reduce over the 64 MiB buffer).
//   npm run bench:kernels [-- --json] [-- --quick]
// With --json the last line is one JSON object (keys in native/README.md).
import { randomFillSync } from "node:crypto";

import { capabilities, nativeUnavailableReason, paths, strongHash, type KernelPath } from "#native/index.js";
import { fmt, measureAsync, measureSync, type TimingOptions } from "./lib-timing.js";

const MiB = 1 << 20;
const SIZES = { "64MiB": 64 * MiB, "256KiB": 256 * 1024 } as const;
type SizeName = keyof typeof SIZES;
const json = process.argv.includes("--json");
const quick = process.argv.includes("--quick");
const NATIVE_TIMING: TimingOptions = { samples: quick ? 3 : 9, minSampleMs: quick ? 40 : 120 };
const TS_TIMING: TimingOptions = { samples: 3, minSampleMs: 100 };

interface Inputs {
  random: Buffer;
  /** Random bytes in one 64 KiB group of every four, zeros in the rest: a sparse disk image's chunk. */
  sparse: Buffer;
  zero: Buffer;
  edited: Buffer;
  delta: Buffer;
  /** Reused decode target: decoding into fresh memory would measure page faults, not the kernel. */
  out: Buffer;
}

/** Random data, a zero buffer whose pages are really mapped, and a copy with 3 bytes changed per page. */
function inputs(size: number): Inputs {
  const random = randomFillSync(Buffer.allocUnsafe(size));
  const sparse = Buffer.from(random);
  for (let g = 0; g < size; g += 64 * 1024) if ((g / (64 * 1024)) % 4 !== 0) sparse.fill(0, g, g + 64 * 1024);
  const zero = Buffer.alloc(size, 1).fill(0); // written pages: no shared zero page
  const edited = Buffer.from(random);
  for (let p = 0; p < size; p += 4096) for (const o of [17, 1800, 3001]) edited[p + o] = edited[p + o]! ^ 0x5a;
  const delta = paths.ts.xorDeltaEncode(random, edited);
  return { random, sparse, zero, edited, delta, out: Buffer.alloc(size, 1) };
}

type Kernel = (p: KernelPath, i: Inputs) => unknown;

const KERNELS: Record<string, Kernel> = {
  read: (p, i) => p.readProbe(i.random),
  crc32c: (p, i) => p.crc32c(i.random),
  analyzeChunk: (p, i) => p.analyzeChunk(i.random),
  zero: (p, i) => p.zeroPages(i.zero),
  fingerprint: (p, i) => p.fingerprints(i.random),
  strongHash: (p, i) => p.strongHash(i.random),
  strongHashSparse: (p, i) => p.strongHash(i.sparse),
  xorEncode: (p, i) => p.xorDeltaEncode(i.random, i.edited),
  xorDecode: (p, i) => p.xorDeltaDecode(i.random, i.delta, i.out),
};
type KernelName = keyof typeof KERNELS;

/** Only these differ between the AVX-512 and the AVX2/SSE4.2 tiers. */
const AVX512_SENSITIVE = new Set<KernelName>(["crc32c", "analyzeChunk", "strongHash", "strongHashSparse"]);

type PathTable = Record<string, Partial<Record<KernelPath["name"], number>>>;

function benchSize(size: number): PathTable {
  const data = inputs(size);
  const table: PathTable = {};
  for (const [name, kernel] of Object.entries(KERNELS)) {
    const row: PathTable[string] = {};
    for (const p of [paths.simd, paths.simdNoAvx512, paths.scalar, paths.ts]) {
      if (p === undefined || (p.name === "simd-no-avx512" && !AVX512_SENSITIVE.has(name))) continue;
      row[p.name] = measureSync(size, () => kernel(p, data), p.name === "ts" ? TS_TIMING : NATIVE_TIMING);
    }
    table[name] = row;
  }
  return table;
}

/** BLAKE3 on both cores: two streams of async strongHash calls on separate 64 MiB buffers. */
async function strongHashTwoCores(): Promise<number> {
  const bufs = [inputs(64 * MiB).random, inputs(64 * MiB).random];
  const round = (): Promise<unknown> => Promise.all(bufs.map((b) => strongHash(b)));
  return measureAsync(2 * 64 * MiB, round, { samples: quick ? 3 : 5, minSampleMs: 200 });
}

/** Fastest path of a kernel (the live one, in practice). */
const best = (row: PathTable[string] | undefined): number =>
  Math.max(0, ...Object.values(row ?? {}).filter((v) => v !== undefined));
/** Read bandwidth: the native AVX2 OR-reduce (the TypeScript loop is no measure of memory). */
const readOf = (t: PathTable): number => t["read"]?.simd ?? t["read"]?.ts ?? 0;

function printTable(size: SizeName, table: PathTable, read: number): void {
  const cols = ["simd", "simd-no-avx512", "scalar", "ts"] as const;
  console.log(`\n${size} (GB/s, best of ${NATIVE_TIMING.samples} samples; ts best of ${TS_TIMING.samples})`);
  console.log(["kernel".padEnd(17), ...cols.map((c) => c.padStart(15)), "best/read".padStart(10)].join(""));
  for (const [name, row] of Object.entries(table)) {
    const cells = cols.map((c) => fmt(row[c], c === "ts" ? 3 : 2).padStart(15));
    console.log([name.padEnd(17), ...cells, fmt(best(row) / read).padStart(10)].join(""));
  }
}

async function main(): Promise<void> {
  if (paths.simd === undefined)
    console.error(`native module not loaded (${nativeUnavailableReason}): TypeScript figures only`);
  const tables = {} as Record<SizeName, PathTable>;
  for (const [name, size] of Object.entries(SIZES) as [SizeName, number][]) tables[name] = benchSize(size);
  const twoCore = await strongHashTwoCores();
  const big = tables["64MiB"];
  const small = tables["256KiB"];
  const read = readOf(big);
  const result = {
    method:
      `best of ${NATIVE_TIMING.samples} samples (>= ${NATIVE_TIMING.minSampleMs} ms each); ` +
      `ts path best of ${TS_TIMING.samples}`,
    capabilities: capabilities(),
    read_gbps: read,
    read_l2_gbps: readOf(small),
    crc32c_gbps: best(big["crc32c"]),
    crc32c_l2_gbps: best(small["crc32c"]),
    analyze_chunk_gbps: best(big["analyzeChunk"]),
    zero_gbps: best(big["zero"]),
    fingerprint_gbps: best(big["fingerprint"]),
    strong_hash_gbps: best(big["strongHash"]),
    strong_hash_2core_gbps: twoCore,
    /** Logical bytes/s of BLAKE3 over a chunk that is 3/4 zero groups (skipped by the table). */
    strong_hash_sparse_gbps: best(big["strongHashSparse"]),
    xor_encode_gbps: best(big["xorEncode"]),
    xor_decode_gbps: best(big["xorDecode"]),
    ratios_vs_read: {
      crc32c: best(big["crc32c"]) / read,
      analyze_chunk: best(big["analyzeChunk"]) / read,
      zero: best(big["zero"]) / read,
    },
    paths: tables,
  };
  const targets = {
    crc32c_vs_read_0_8: result.ratios_vs_read.crc32c >= 0.8,
    crc32c_l2_15: result.crc32c_l2_gbps >= 15,
    zero_vs_read_0_8: result.ratios_vs_read.zero >= 0.8,
    fingerprint_8: result.fingerprint_gbps >= 8,
    strong_hash_1_4: result.strong_hash_gbps >= 1.4,
  };
  for (const size of Object.keys(SIZES) as SizeName[]) printTable(size, tables[size], readOf(tables[size]));
  console.log(`\nread bandwidth (64 MiB, 1 thread): ${fmt(read)} GB/s; strong hash on 2 cores: ${fmt(twoCore)} GB/s`);
  console.log(
    `targets: ${Object.entries(targets)
      .map(([k, v]) => `${k}=${v ? "met" : "MISSED"}`)
      .join(" ")}`,
  );
  if (json) console.log(JSON.stringify({ ...result, targets }));
}

await main();
