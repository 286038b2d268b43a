import { randomFillSync } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendBatch, type SendBatchOptions } from "./client.js";
import { startDataServer, type DataServer } from "./server.js";
import { TcpRelay } from "#common/relay.js";
import { batchOptions, MiB, silentLog, tempDir } from "#test/support/data-channel.js";

const secret = Buffer.alloc(32, 9);
const CHUNKS = 4;
const SIZE = CHUNKS * MiB;
/** More links cut mid-chunk than the libuv pool of this process has threads (4 unless set). */
const STALLED = Math.max(6, Number(process.env["UV_THREADPOOL_SIZE"] ?? 4) + 2);
/**
 * The batch sent beside them takes well under a second here. Were a quiet link's native read to
 * keep its pool thread, it would wait for the stalled links' idle timeout (two minutes).
 */
const BESIDE_MS = 20_000;

/**
 * A relay that forwards a connection's first `bytes` from the sender and then nothing more, while
 * keeping both sides open: to the destination it is a link cut in the middle of a chunk.
 */
async function startStallingRelay(
  target: string,
  bytes: number,
): Promise<{ address: string; stalled: () => number; close(): Promise<void> }> {
  const at = target.lastIndexOf(":");
  let stalled = 0;
  const relay = await TcpRelay.start({
    target: { host: target.slice(0, at), port: Number(target.slice(at + 1)) },
    forward: ({ client, upstream }) => {
      let forwarded = 0;
      client.on("data", (d: Buffer) => {
        if (forwarded >= bytes) return;
        const part = d.subarray(0, bytes - forwarded);
        forwarded += part.length;
        upstream.write(part);
        if (forwarded >= bytes) stalled += 1;
      });
      upstream.pipe(client);
    },
  });
  return { address: relay.address, stalled: () => stalled, close: () => relay.close() };
}

let work: string;
let root: string;
let source: string;
let server: DataServer;

beforeAll(async () => {
  work = await tempDir("stalled");
  root = join(work, "dest");
  source = join(work, "src.img");
  await mkdir(root, { recursive: true });
  await writeFile(source, randomFillSync(Buffer.alloc(SIZE)));
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

const batch = (address: string, migrationId: string): SendBatchOptions =>
  batchOptions(
    { address, secret, sourceHost: "src", migrationId, sourcePath: source, volumeSizeBytes: SIZE },
    { destDir: migrationId, compression: "none", streams: 1 },
  );

describe("a destination whose links went quiet in the middle of a chunk", () => {
  it("receives another batch at once: a quiet link's read holds no pool thread", { timeout: 120_000 }, async () => {
    // Half way into the second chunk: the destination is inside a chunk's payload.
    const relay = await startStallingRelay(server.address, MiB + MiB / 2);
    const quiet = Array.from({ length: STALLED }, (_, i) =>
      // No resume: each fails as soon as the relay closes.
      sendBatch({ ...batch(relay.address, `mig-quiet-${i}`), resumeWindowMs: 0 }).catch((err: unknown) => err),
    );
    try {
      await expect.poll(relay.stalled, { timeout: 30_000 }).toBe(STALLED);
      const started = performance.now();
      const r = await sendBatch(batch(server.address, "mig-beside"));
      const ms = performance.now() - started;
      expect(r.chunks).toHaveLength(CHUNKS);
      const [a, b] = await Promise.all([readFile(source), readFile(join(root, "mig-beside", "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
      expect(ms).toBeLessThan(BESIDE_MS);
    } finally {
      await relay.close();
      await Promise.all(quiet);
    }
  });
});
