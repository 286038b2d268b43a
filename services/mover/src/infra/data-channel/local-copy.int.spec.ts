// A batch whose destination is the sending mover's own process, against real files: the copy
// itself, the fencing it shares with data-channel sessions, and abort.
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32c } from "#native/index.js";
import { fenceKey, FenceTable } from "../../domain/data-channel/fence.js";
import { TransferAbortedError } from "../../errors.js";
import { readBackCovers, readBacks } from "../read-back.js";
import { beginOf, sendBatch, type SendBatchOptions } from "./client.js";
import { FencedError } from "./fenced.js";
import { copyBatchLocally, LOCAL_CHUNKS_IN_FLIGHT } from "./local-copy.js";
import type { BatchHolder } from "./server-batch.js";
import { startDataServer, type DataServer } from "./server.js";
import { batchOptions, makeSparseFile, MiB, silentLog, tempDir } from "#test/support/data-channel.js";

const secret = randomBytes(32);
const SIZE = 8 * MiB + 5000; // a short last chunk

let work: string;
let root: string;
let source: string;
let server: DataServer;

beforeAll(async () => {
  work = await tempDir("local");
  root = join(work, "root");
  source = join(root, "src.img");
  await mkdir(root);
  // Data in chunks 0, 3 (unaligned, straddling into 4) and the short last one; the rest holes.
  await makeSparseFile(source, SIZE, [
    { offset: 0, length: MiB },
    { offset: 3 * MiB + 12_345, length: MiB },
    { offset: 8 * MiB, length: 5000 },
  ]);
  server = await startDataServer({
    host: "h",
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
      sourceHost: "h",
      migrationId: "mig-local",
      sourcePath: source,
      volumeSizeBytes: SIZE,
    },
    over,
  );

describe("local copy (source and destination in one mover)", () => {
  it("copies byte-identical with holes kept and no wire bytes, fsynced, and records the read-back", async () => {
    const r = await server.copyLocal(batch({ destDir: "copy" }));
    const part = join(root, "copy", "disk.img.part");
    const [src, dst] = await Promise.all([readFile(source), readFile(part)]);
    expect(dst.equals(src)).toBe(true);
    expect(r.wireBytes).toBe(0);
    expect(r.bytes).toBe(SIZE);
    expect(r.chunks.map((c) => c.offset)).toEqual(Array.from({ length: 9 }, (_, i) => i * MiB));
    expect(r.chunks.map((c) => c.zero)).toEqual([false, true, true, false, false, true, true, true, false]);
    expect(r.chunks.every((c) => c.wireBytes === 0)).toBe(true);
    // Holes stay holes: about the source's 2 MiB + 5000 bytes of data are allocated, not 8 MiB.
    expect((await stat(part)).blocks * 512).toBeLessThanOrEqual((await stat(source)).blocks * 512 + 2 * 4096);
    // The background read-back found on disk what was checksummed: finalize can take the record.
    await readBacks.settled(part);
    expect(await readBackCovers(part, "mig-local", SIZE, crc32c(src))).toBe(true);
  });

  const refused =
    "is refused when a data-channel session of a newer delivery holds the batch, and refuses an older one itself";
  it(refused, async () => {
    await sendBatch(batch({ destDir: "fenced", delivery: 2 }));
    const older = await server.copyLocal(batch({ destDir: "fenced", delivery: 1 })).catch((e: unknown) => e);
    expect(older).toBeInstanceOf(FencedError);

    await server.copyLocal(batch({ destDir: "fenced2", delivery: 3 }));
    const stale = await sendBatch(batch({ destDir: "fenced2", delivery: 2 })).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(FencedError);
    expect((await readFile(join(root, "fenced2", "disk.img.part"))).equals(await readFile(source))).toBe(true);
  });

  it("stops before its next write once a newer holder takes the batch", async () => {
    const fences = new FenceTable<BatchHolder>();
    const o = batch({ destDir: "takeover", chunkCount: 9 });
    const key = fenceKey(beginOf(o));
    const newer: BatchHolder = { fence: () => Promise.resolve() };
    let written = 0;
    let takeover: Promise<void> | undefined;
    const copy = copyBatchLocally(
      { roots: [root], fences, log: silentLog },
      {
        ...o,
        onChunk: () => {
          written += 1;
          if (written > 1) return;
          const claim = fences.claim(key, { attempt: 0, delivery: 9 }, newer);
          expect(claim.granted && claim.superseded !== undefined).toBe(true);
          if (claim.granted) takeover = claim.superseded?.[0]?.fence(new FencedError("taken over in the test"));
        },
      },
    );
    const err = await copy.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FencedError);
    await takeover;
    // Chunks already past their check when the claim came may finish; no chunk started after it.
    expect(written).toBeLessThanOrEqual(LOCAL_CHUNKS_IN_FLIGHT);
    expect(fences.holds(key, newer)).toBe(true);
  });

  it("stops with TransferAbortedError when the migration ends", async () => {
    const ac = new AbortController();
    ac.abort(new Error("cancelled"));
    const err = await server.copyLocal(batch({ destDir: "aborted", signal: ac.signal })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransferAbortedError);
  });
});
