import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TransferredChunk } from "#schemas/index.js";
import { crc32c, zeroCopy } from "#native/index.js";
import { ChecksumMismatchError, NoSpaceError } from "../../errors.js";
import { sendBatch, type SendBatchOptions } from "./client.js";
import { startDataServer, type DataServer } from "./server.js";
import { readBackName, readBacks } from "../read-back.js";
import { finalizeVolumes } from "../volumes.js";
import { FencedError } from "./fenced.js";
import { makeSparseFile, MiB, silentLog, startCorruptingProxy, tempDir } from "#test/support/data-channel.js";

const secret = randomBytes(32);
const SIZE = 20 * MiB + 12_345; // not a multiple of the 1 MiB chunk: the last chunk is short
const CHUNKS = Math.ceil(SIZE / MiB);
const EXTENTS = [
  { offset: 1_000_003, length: 5000 },
  { offset: 7 * MiB - 100, length: 300 }, // straddles a chunk boundary
  { offset: 13 * MiB + 4095, length: 2 },
  { offset: 16 * MiB, length: 3 * MiB + 77 }, // several dense chunks
  { offset: SIZE - 10, length: 10 },
];

let work: string;
let root: string;
let source: string;
let server: DataServer;

beforeAll(async () => {
  work = await tempDir("dc");
  root = join(work, "dest");
  source = join(work, "src.img");
  await mkdir(root);
  await makeSparseFile(source, SIZE, EXTENTS);
  server = await startDataServer({
    host: "dest",
    listenHost: "127.0.0.1",
    listenPort: 0,
    secret,
    roots: [root],
    log: silentLog,
  });
});

afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

function batch(over: Partial<SendBatchOptions> & { firstChunk: number; chunkCount: number }): SendBatchOptions {
  return {
    address: server.address,
    secret,
    sourceHost: "src",
    migrationId: "mig-1",
    batch: over.firstChunk === 0 ? 0 : 1,
    attempt: 0,
    sourcePath: source,
    destDir: "vm1",
    destName: "disk.img",
    volumeSizeBytes: SIZE,
    chunkSizeBytes: MiB,
    log: silentLog,
    ...over,
  };
}

const firstHalf = { firstChunk: 0, chunkCount: 11 };
const secondHalf = { firstChunk: 11, chunkCount: CHUNKS - 11 };

async function expectIdentical(destDir: string): Promise<void> {
  const [a, b] = await Promise.all([readFile(source), readFile(join(root, destDir, "disk.img.part"))]);
  expect(b.length).toBe(a.length);
  expect(b.equals(a)).toBe(true);
}

describe("data channel transfer", () => {
  it("sends a sparse volume as two batches: identical bytes, no more blocks than the source", async () => {
    const seen: TransferredChunk[] = [];
    const one = await sendBatch(batch({ ...firstHalf, onChunk: (c) => seen.push(c) }));
    const two = await sendBatch(batch({ ...secondHalf, onChunk: (c) => seen.push(c) }));
    await expectIdentical("vm1");

    const chunks = [...one.chunks, ...two.chunks];
    expect(chunks.map((c) => c.offset)).toEqual(Array.from({ length: CHUNKS }, (_, i) => i * MiB));
    expect(seen).toHaveLength(CHUNKS);
    expect(chunks.at(-1)?.length).toBe(SIZE - 20 * MiB);
    expect(one.bytes + two.bytes).toBe(SIZE);
    // Chunks without any extent are sent as zero chunks and cost a header.
    expect(chunks.filter((c) => c.zero).map((c) => c.offset / MiB)).toEqual([1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 14, 15]);
    expect(one.wireBytes + two.wireBytes).toBeLessThan(4 * MiB);
    const whole = await readFile(source);
    for (const c of chunks) expect(c.crc32c).toBe(crc32c(whole.subarray(c.offset, c.offset + c.length)));

    const [src, dst] = await Promise.all([stat(source), stat(join(root, "vm1", "disk.img.part"))]);
    expect(dst.blocks).toBeLessThanOrEqual(src.blocks);
  });

  it("reads each batch back after it is acknowledged and records it for finalize, unless verify is off", async () => {
    const dir = "vm-readback";
    await sendBatch(batch({ ...firstHalf, destDir: dir }));
    await sendBatch(batch({ ...secondHalf, destDir: dir, verify: false }));
    await expectIdentical(dir);
    await readBacks.settled(join(root, dir, "disk.img.part")); // the server runs in this process
    const whole = await readFile(source);
    const lines = (await readFile(readBackName(join(root, dir, "disk.img.part")), "utf8")).trim().split("\n");
    // The first batch's range, marked before its writes and recorded with its CRC32C once it read
    // back right; the second batch was not read back and left no record.
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual([
      { migrationId: "mig-1", start: 0, end: 11 * MiB },
      { migrationId: "mig-1", start: 0, end: 11 * MiB, crc32c: crc32c(whole.subarray(0, 11 * MiB)) },
    ]);
  });

  it("takes an incremental batch's unchanged chunks from the base, over striped connections", async () => {
    const dir = "vm-incremental";
    const whole = await readFile(source);
    const base = Buffer.from(whole);
    base[17 * MiB + 5] = (base[17 * MiB + 5] ?? 0) ^ 0x5a; // one dense chunk differs
    await mkdir(join(root, dir));
    const fh = await open(join(root, dir, "disk.img"), "w");
    await fh.writeFile(base);
    await fh.close();
    const r = await sendBatch(
      batch({ firstChunk: 0, chunkCount: CHUNKS, destDir: dir, incremental: true, streams: 3 }),
    );
    await expectIdentical(dir);
    expect(r.breakdown.baseReused).toBe(r.breakdown.data - MiB);
    expect(r.wireBytes).toBeGreaterThan(MiB);
    expect(r.wireBytes).toBeLessThan(MiB + 64 * 1024);
    // The base is only read.
    expect((await readFile(join(root, dir, "disk.img"))).equals(base)).toBe(true);

    // Finalized over the base, a later batch of the same migration is a stale sender's: fenced.
    const volume = { destName: "disk.img", sizeBytes: SIZE, crc32c: crc32c(whole) };
    const finalize = { op: "finalize", version: 1, migrationId: "mig-1", destDir: dir, verify: true } as const;
    expect(await finalizeVolumes({ ...finalize, incremental: true, volumes: [volume] }, [root])).toMatchObject({
      ok: true,
    });
    expect((await readFile(join(root, dir, "disk.img"))).equals(whole)).toBe(true);
    const stale = sendBatch(batch({ ...firstHalf, destDir: dir, incremental: true, attempt: 1 }));
    await expect(stale).rejects.toBeInstanceOf(FencedError);
    await expect(stat(join(root, dir, "disk.img.part"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("rewrites the same bytes when a batch is redelivered", async () => {
    await sendBatch(batch({ ...firstHalf, attempt: 1 }));
    await sendBatch(batch({ ...firstHalf, attempt: 2, zeroCopy: false }));
    await expectIdentical("vm1");
  });

  it("turns data back into a hole when the chunk is now zero", async () => {
    const dir = "vm-rewrite";
    const other = join(work, "dense.img");
    await makeSparseFile(other, SIZE, [{ offset: 0, length: SIZE }]);
    await sendBatch(batch({ ...firstHalf, destDir: dir, sourcePath: other }));
    await sendBatch(batch({ ...firstHalf, destDir: dir }));
    await sendBatch(batch({ ...secondHalf, destDir: dir }));
    await expectIdentical(dir);
    // With PUNCH_HOLE the old data's blocks are freed; without native, zeros are written instead.
    if (zeroCopy.available) {
      const [src, dst] = await Promise.all([stat(source), stat(join(root, dir, "disk.img.part"))]);
      expect(dst.blocks).toBeLessThanOrEqual(src.blocks);
    }
  });

  it("resends a chunk corrupted in flight and still writes identical bytes", async () => {
    // Unpacked both times: the codec auto picks follows the link's measured rate, which differs
    // between the direct link and the proxy's, and this counts the resend's bytes on the wire.
    const clean = await sendBatch(batch({ ...secondHalf, destDir: "vm-clean", compression: "none" }));
    const proxy = await startCorruptingProxy(server.address, "once");
    try {
      const flipped = await sendBatch(
        batch({ ...secondHalf, destDir: "vm-flip", address: proxy.address, compression: "none" }),
      );
      expect(proxy.corrupter.flips).toBe(1);
      const firstData = clean.chunks.find((c) => !c.zero);
      const again = flipped.chunks.find((c) => c.offset === firstData?.offset);
      expect(again?.wireBytes).toBe(2 * (firstData?.wireBytes ?? 0));
      const [a, b] = await Promise.all([
        readFile(join(root, "vm-clean", "disk.img.part")),
        readFile(join(root, "vm-flip", "disk.img.part")),
      ]);
      expect(b.equals(a)).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it("fails with a retryable ChecksumMismatchError when every resend is corrupted too", async () => {
    const proxy = await startCorruptingProxy(server.address, "always");
    try {
      const err: unknown = await sendBatch(batch({ ...secondHalf, destDir: "vm-bad", address: proxy.address })).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ChecksumMismatchError);
      expect((err as ChecksumMismatchError).retryable).toBe(true);
      expect(proxy.corrupter.flips).toBeGreaterThanOrEqual(4);
    } finally {
      await proxy.close();
    }
  });

  it("honours the bandwidth limit", async () => {
    const started = performance.now();
    const r = await sendBatch(
      batch({ firstChunk: 16, chunkCount: 2, destDir: "vm-slow", bandwidthLimitBytesPerSec: 4 * MiB }),
    );
    const seconds = (performance.now() - started) / 1000;
    // 2 MiB at 4 MiB/s with a 0.4 MiB burst: at least ~0.4 s.
    expect(seconds).toBeGreaterThan((r.wireBytes - 0.4 * MiB) / (4 * MiB) - 0.05);
  });

  it("stops when aborted", async () => {
    const controller = new AbortController();
    const p = sendBatch(
      batch({ ...firstHalf, destDir: "vm-abort", bandwidthLimitBytesPerSec: 64 * 1024, signal: controller.signal }),
    );
    controller.abort();
    await expect(p).rejects.toMatchObject({ code: "ABORTED" });
  });
});

describe("data channel on a full file system", () => {
  let small: string | undefined;
  let tmpfsServer: DataServer | undefined;
  const dense = (): string => join(work, "dense-6m.img");

  beforeAll(async () => {
    await makeSparseFile(dense(), 6 * MiB, [{ offset: 0, length: 6 * MiB }]);
    small = await tempDir("tmpfs");
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", small], { stdio: "ignore" });
    } catch {
      await rm(small, { recursive: true, force: true });
      small = undefined;
      return;
    }
    tmpfsServer = await startDataServer({
      host: "full",
      listenHost: "127.0.0.1",
      listenPort: 0,
      secret,
      roots: [small],
      log: silentLog,
    });
  });

  afterAll(async () => {
    await tmpfsServer?.close();
    if (small !== undefined) {
      execFileSync("umount", [small]);
      await rm(small, { recursive: true, force: true });
    }
  });

  it("reports NO_SPACE as a retryable NoSpaceError", async (ctx) => {
    if (tmpfsServer === undefined) ctx.skip(); // needs root to mount a 4 MiB tmpfs
    const err: unknown = await sendBatch(
      batch({
        firstChunk: 0,
        chunkCount: 6,
        volumeSizeBytes: 6 * MiB,
        sourcePath: dense(),
        address: tmpfsServer?.address ?? "",
        destDir: "full",
      }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoSpaceError);
    expect((err as NoSpaceError).retryable).toBe(true);
  });
});

// The destination's two readers (native recv into chunk buffers; Node's stream as fallback) and
// its two write paths (page cache; O_DIRECT from aligned buffers when DWCP_DIRECT_IO=on) must
// land the same bytes. The native ones are only in play when the module is loaded.
describe.each([
  { recv: "on", direct: "on" },
  { recv: "on", direct: "off" },
  { recv: "off", direct: "off" },
])("destination paths (nativeRecv $recv, DWCP_DIRECT_IO=$direct)", ({ recv, direct }) => {
  const saved = { direct: process.env["DWCP_DIRECT_IO"] };
  let own: DataServer;
  let dense: string;
  beforeAll(async () => {
    process.env["DWCP_DIRECT_IO"] = direct;
    own = await startDataServer({
      host: "dest",
      listenHost: "127.0.0.1",
      listenPort: 0,
      secret,
      roots: [root],
      log: silentLog,
      nativeRecv: recv === "on",
    });
    dense = join(work, `dense-${recv}-${direct}.img`);
    await makeSparseFile(dense, SIZE, [{ offset: 0, length: SIZE }]);
  });
  afterAll(async () => {
    await own?.close();
    if (saved.direct === undefined) delete process.env["DWCP_DIRECT_IO"];
    else process.env["DWCP_DIRECT_IO"] = saved.direct;
  });

  it("lands a dense and a sparse volume byte-identical", async () => {
    for (const [src, dir] of [
      [dense, `paths-dense-${recv}-${direct}`],
      [source, `paths-sparse-${recv}-${direct}`],
    ] as const) {
      const opts = { address: own.address, sourcePath: src, destDir: dir };
      await sendBatch(batch({ ...firstHalf, ...opts }));
      await sendBatch(batch({ ...secondHalf, ...opts }));
      const [a, b] = await Promise.all([readFile(src), readFile(join(root, dir, "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
    }
  });
});

describe("compressed chunks (LZ4 on a capped link)", () => {
  let text: string;
  beforeAll(async () => {
    // Compressible, text-like bytes (what LZ4 pays for) in a sparse layout.
    text = join(work, "text.img");
    const fh = await open(text, "w");
    const line = Buffer.from("2026-11-26T23:59:59Z host-a dwcp[42]: migration mig-7 batch 3 chunk 0x40000 ok\n");
    const block = Buffer.alloc(3 * MiB + 5);
    for (let i = 0; i < block.length; i++) block[i] = line[i % line.length] ?? 0;
    await fh.truncate(SIZE);
    await fh.write(block, 0, block.length, 2 * MiB + 4096);
    await fh.write(randomBytes(MiB), 0, MiB, 9 * MiB); // incompressible: sent as is
    await fh.close();
  });

  const compresses =
    "compresses with LZ4 and zstd, sends fewer bytes, lands identical bytes, and resends a corrupted one";
  it(compresses, async () => {
    const opts = { ...firstHalf, sourcePath: text, bandwidthLimitBytesPerSec: 100 * MiB };
    const packed = await sendBatch(batch({ ...opts, destDir: "lz4", compression: "lz4" }));
    const zstd = await sendBatch(batch({ ...opts, destDir: "zstd", compression: "zstd" }));
    const plain = await sendBatch(batch({ ...opts, destDir: "plain", compression: "none" }));
    expect(packed.wireBytes).toBeLessThan(plain.wireBytes - 2 * MiB);
    expect(zstd.compression.codec).toBe("zstd");
    expect(zstd.wireBytes).toBeLessThan(plain.wireBytes - 2 * MiB);
    // The breakdown adds up: every logical byte was either skipped as zero or sent as data.
    for (const r of [packed, zstd, plain]) expect(r.breakdown.zeroSkipped + r.breakdown.data).toBe(r.bytes);
    expect(zstd.breakdown.packedIn).toBeGreaterThan(0);
    expect(zstd.breakdown.packedOut).toBeLessThan(zstd.breakdown.packedIn / 4);
    expect(plain.breakdown.packedIn).toBe(0);
    const proxy = await startCorruptingProxy(server.address, "once");
    try {
      await sendBatch(batch({ ...opts, destDir: "zstd-flip", address: proxy.address, compression: "zstd" }));
      expect(proxy.corrupter.flips).toBe(1);
    } finally {
      await proxy.close();
    }
    const want = (await readFile(text)).subarray(0, 11 * MiB);
    for (const dir of ["lz4", "zstd", "plain", "zstd-flip"]) {
      const got = await readFile(join(root, dir, "disk.img.part"));
      expect(got.subarray(0, 11 * MiB).equals(want)).toBe(true);
    }
  });
});
