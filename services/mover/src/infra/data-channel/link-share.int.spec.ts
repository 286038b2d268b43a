import { randomFillSync } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendBatch, setMigrationShare, type SendBatchOptions } from "./client.js";
import { startDataServer, type DataServer } from "./server.js";
import { MiB, silentLog, tempDir } from "#test/support/data-channel.js";

// Migrations sharing one link (this process to one destination) at a known link rate: the
// bytes each gets through follow its weight among equal priorities, and a higher priority goes
// first. Measured from the destination's acknowledgements, chunk by chunk.
const secret = Buffer.alloc(32, 9);
const LINK = 8 * MiB;
const CHUNK = 256 * 1024;
const SIZE = 16 * MiB;

let work: string;
let source: string;
let server: DataServer;

beforeAll(async () => {
  work = await tempDir("link-share");
  source = join(work, "src.img");
  await mkdir(join(work, "dest"), { recursive: true });
  await writeFile(source, randomFillSync(Buffer.alloc(SIZE)));
  server = await startDataServer({
    host: "dest",
    listenHost: "127.0.0.1",
    listenPort: 0,
    secret,
    roots: [join(work, "dest")],
    log: silentLog,
  });
});

afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

/** Acknowledgement times (ms) and bytes of one migration's chunks. */
type Acks = Array<{ at: number; bytes: number }>;

function migration(id: string, over: Partial<SendBatchOptions>, acks: Acks): Promise<unknown> {
  return sendBatch({
    address: server.address,
    secret,
    sourceHost: "src",
    migrationId: id,
    batch: 0,
    attempt: 0,
    sourcePath: source,
    destDir: id,
    destName: "disk.img",
    volumeSizeBytes: SIZE,
    chunkSizeBytes: CHUNK,
    firstChunk: 0,
    chunkCount: SIZE / CHUNK,
    compression: "none",
    streams: 1,
    verify: false,
    linkRateBytesPerSec: LINK,
    log: silentLog,
    onChunk: (c) => acks.push({ at: performance.now(), bytes: c.length }),
    ...over,
  });
}

const bytesIn = (acks: Acks, from: number, to: number): number =>
  acks.filter((a) => a.at > from && a.at <= to).reduce((sum, a) => sum + a.bytes, 0);

describe("migrations sharing a link", () => {
  it("get the link's rate in the ratio of their weights, and the link stays full", async () => {
    const heavy: Acks = [];
    const light: Acks = [];
    const started = performance.now();
    await Promise.all([migration("heavy", { weight: 3 }, heavy), migration("light", { weight: 1 }, light)]);
    // While both send: from the later first acknowledgement to the heavier one's last.
    const from = Math.max(heavy[0]?.at ?? 0, light[0]?.at ?? 0);
    const to = heavy.at(-1)?.at ?? 0;
    const ratio = bytesIn(heavy, from, to) / bytesIn(light, from, to);
    expect(ratio).toBeGreaterThan(3 * 0.85);
    expect(ratio).toBeLessThan(3 * 1.15);
    // Work-conserving: the lighter one had the whole link once alone, so both took about 2 x SIZE / LINK.
    const seconds = ((light.at(-1)?.at ?? 0) - started) / 1000;
    expect(seconds).toBeGreaterThan(((2 * SIZE) / LINK) * 0.9);
    expect(seconds).toBeLessThan(((2 * SIZE) / LINK) * 2);
  });

  it("sends a higher priority first, and follows a weight changed mid-run", async () => {
    const high: Acks = [];
    const low: Acks = [];
    const half = { chunkCount: SIZE / CHUNK / 2 };
    await Promise.all([migration("high", { ...half, priority: 1 }, high), migration("low", half, low)]);
    const highDone = high.at(-1)?.at ?? 0;
    expect(highDone).toBeLessThan(low.at(-1)?.at ?? 0);
    // Before the higher one's first request, the lower one may have had the link's burst (0.1 s).
    expect(bytesIn(low, 0, highDone)).toBeLessThanOrEqual(LINK / 10 + CHUNK);

    // Equal weights, then one of them gets 3: its share follows from its next chunk on.
    const one: Acks = [];
    const two: Acks = [];
    let changedAt = Number.POSITIVE_INFINITY;
    const a = migration("mid-a", {}, one);
    const b = migration("mid-b", {}, two);
    const watching = (async () => {
      while (two.length < 8) await new Promise((r) => setTimeout(r, 20));
      changedAt = performance.now();
      setMigrationShare("mid-b", 3, undefined);
    })();
    await Promise.all([a, b, watching]);
    const to = Math.min(one.at(-1)?.at ?? 0, two.at(-1)?.at ?? 0);
    const ratio = bytesIn(two, changedAt + 200, to) / bytesIn(one, changedAt + 200, to);
    expect(ratio).toBeGreaterThan(3 * 0.8);
    expect(ratio).toBeLessThan(3 * 1.2);
  });
});
