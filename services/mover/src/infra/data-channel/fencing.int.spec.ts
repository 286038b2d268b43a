import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendBatch, type SendBatchOptions } from "./client.js";
import { FencedError } from "./fenced.js";
import { startDataServer, type DataServer } from "./server.js";
import { batchOptions, makeSparseFile, MiB, silentLog, tempDir } from "#test/support/data-channel.js";

const secret = randomBytes(32);
const SIZE = 8 * MiB;

let work: string;
let root: string;
let source: string;
let server: DataServer;

beforeAll(async () => {
  work = await tempDir("fence");
  root = join(work, "dest");
  source = join(work, "src.img");
  await mkdir(root);
  await makeSparseFile(source, SIZE, [{ offset: 0, length: SIZE }]);
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

const batch = (over: Partial<SendBatchOptions>): SendBatchOptions =>
  batchOptions(
    {
      address: server.address,
      secret,
      sourceHost: "src",
      migrationId: "mig-fence",
      sourcePath: source,
      volumeSizeBytes: SIZE,
    },
    over,
  );

describe("data channel fencing", () => {
  it("a redelivered batch takes over from the live older sender, which is refused before its next write", async () => {
    let firstAcked!: () => void;
    const acked = new Promise<void>((r) => (firstAcked = r));
    const stale = sendBatch(
      batch({ destDir: "takeover", delivery: 1, bandwidthLimitBytesPerSec: 2 * MiB, onChunk: () => firstAcked() }),
    );
    const staleResult = stale.catch((e: unknown) => e);
    await acked;
    const fresh = await sendBatch(batch({ destDir: "takeover", delivery: 2 }));
    const err = await staleResult;
    expect(err).toBeInstanceOf(FencedError);
    expect((err as FencedError).code).toBe("FENCED");
    expect(fresh.chunks).toHaveLength(8);
    expect((await readFile(join(root, "takeover", "disk.img.part"))).equals(await readFile(source))).toBe(true);
  });

  it("refuses a sender with an older token once a newer one claimed the batch", async () => {
    await sendBatch(batch({ destDir: "older", attempt: 1, delivery: 1 }));
    await expect(sendBatch(batch({ destDir: "older", attempt: 0, delivery: 7 }))).rejects.toBeInstanceOf(FencedError);
    await expect(sendBatch(batch({ destDir: "older", attempt: 1, delivery: 1 }))).resolves.toMatchObject({
      bytes: SIZE,
    });
  });

  it("refuses batches for a volume that was already finalized", async () => {
    await sendBatch(batch({ destDir: "done" }));
    await rename(join(root, "done", "disk.img.part"), join(root, "done", "disk.img"));
    await expect(sendBatch(batch({ destDir: "done", attempt: 3 }))).rejects.toBeInstanceOf(FencedError);
    await expect(readFile(join(root, "done", "disk.img.part"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("shares a migration's bandwidth limit between its concurrent batches", async () => {
    const started = performance.now();
    const limit = 8 * MiB;
    const [a, b] = await Promise.all([
      sendBatch(batch({ destDir: "shared", batch: 0, firstChunk: 0, chunkCount: 4, bandwidthLimitBytesPerSec: limit })),
      sendBatch(batch({ destDir: "shared", batch: 1, firstChunk: 4, chunkCount: 4, bandwidthLimitBytesPerSec: limit })),
    ]);
    const seconds = (performance.now() - started) / 1000;
    // 8 MiB through one 8 MiB/s budget with a 0.8 MiB burst: ~0.9 s; two separate budgets: ~0.45 s.
    expect(seconds).toBeGreaterThan((a.wireBytes + b.wireBytes - 0.8 * MiB) / limit - 0.05);
  });
});
