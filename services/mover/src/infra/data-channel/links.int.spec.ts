// Kept links and striped batches, against real data servers (mTLS with the provisioned
// certificates, and plaintext) through a TCP proxy that can cut the link; which connection
// carried what is read from the destination's log.
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FaultProxy } from "#test/chaos/support/proxy.js";
import { provision } from "#common/credentials/provision.js";
import { capturingLog, linkTlsOf, makeSparseFile, MiB, silentLog, tempDir } from "#test/support/data-channel.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import { readBackName, readBacks } from "../read-back.js";
import { AuthFailedError } from "../../errors.js";
import { closeIdleLinks, sendBatch, type SendBatchOptions, type SendBatchResult } from "./client.js";
import { startDataServer, type DataServer } from "./server.js";

const secret = randomBytes(32);
const SIZE = 12 * MiB + 777;
const CHUNKS = Math.ceil(SIZE / MiB);

let work: string;
let root: string;
let source: string;
let server: DataServer;
let plain: DataServer;
let proxy: FaultProxy;
let senderTls: LinkTls;
let receiverTls: LinkTls;
const receiver = capturingLog();
const plainReceiver = capturingLog();

beforeAll(async () => {
  work = await tempDir("links");
  root = join(work, "dest");
  source = join(work, "src.img");
  await mkdir(root);
  await makeSparseFile(source, SIZE, [
    { offset: 100, length: 3 * MiB },
    { offset: 6 * MiB + 5, length: 2 * MiB },
    { offset: SIZE - 50, length: 50 },
  ]);
  const pki = await provision(join(work, "pki"), { hosts: ["a", "b"] });
  senderTls = linkTlsOf(pki, "mover-a");
  receiverTls = linkTlsOf(pki, "mover-b");
  const common = { listenHost: "127.0.0.1", listenPort: 0, secret, roots: [root] };
  server = await startDataServer({ ...common, host: "b", log: receiver.log, tls: linkTlsOf(pki, "mover-b") });
  plain = await startDataServer({ ...common, host: "b", log: plainReceiver.log });
  const at = server.address.lastIndexOf(":");
  proxy = await FaultProxy.start({
    name: "links",
    listenHost: "127.0.0.1",
    targetHost: server.address.slice(0, at),
    targetPort: Number(server.address.slice(at + 1)),
  });
});

afterEach(() => {
  closeIdleLinks();
  proxy.reset();
});

afterAll(async () => {
  closeIdleLinks();
  await proxy?.close();
  await server?.close();
  await plain?.close();
  await rm(work, { recursive: true, force: true });
});

function batch(over: Partial<SendBatchOptions> & { migrationId: string }): SendBatchOptions {
  return {
    address: proxy.address,
    tls: { tls: senderTls, destHost: "b" },
    secret,
    sourceHost: "a",
    batch: 0,
    attempt: 0,
    sourcePath: source,
    destDir: over.migrationId,
    destName: "disk.img",
    volumeSizeBytes: SIZE,
    chunkSizeBytes: MiB,
    firstChunk: 0,
    chunkCount: CHUNKS,
    log: silentLog,
    ...over,
  };
}

/**
 * Two batches of `m` as the mover sends them: the second starts once every chunk of the first is
 * written (onSent), while the first, lending its link, waits for its acknowledgements.
 */
async function lendingPair(
  m: string,
  logs: { lender?: SendBatchOptions["log"]; sender: SendBatchOptions["log"] },
): Promise<[SendBatchResult, SendBatchResult]> {
  let next: Promise<SendBatchResult> | undefined;
  const first = await sendBatch(
    batch({
      migrationId: m,
      batch: 0,
      firstChunk: 0,
      chunkCount: 6,
      streams: 1,
      lendLink: true,
      ...(logs.lender ? { log: logs.lender } : {}),
      onSent: () => {
        next = sendBatch(
          batch({ migrationId: m, batch: 1, firstChunk: 6, chunkCount: CHUNKS - 6, streams: 1, log: logs.sender }),
        );
      },
    }),
  );
  return [first, await (next as Promise<SendBatchResult>)];
}

type Line = Record<string, unknown>;

/** The connections (sender address:port) that delivered a batch or stripe of `migrationId`, in order. */
const syncedOn = (lines: Line[], migrationId: string): string[] =>
  lines
    .filter((l) => l["msg"] === "batch received and synced" && l["migrationId"] === migrationId)
    .map((l) => String(l["remote"]));
/**
 * syncedOn, once the destination logged `n` of them: it logs a batch after answering BATCH_OK, so
 * the sender may hear the answer before the line is written.
 */
async function syncedAfter(r: ReturnType<typeof capturingLog>, migrationId: string, n: number): Promise<string[]> {
  await r.waitFor(() => syncedOn(r.lines, migrationId).length >= n);
  return syncedOn(r.lines, migrationId);
}
const accepted = (lines: Line[], migrationId: string): Line[] =>
  lines.filter((l) => l["msg"] === "data link accepted" && l["migrationId"] === migrationId);

async function expectIdentical(dir: string): Promise<void> {
  const [a, b] = await Promise.all([readFile(source), readFile(join(root, dir, "disk.img.part"))]);
  expect(b.equals(a)).toBe(true);
}

describe("data links", () => {
  it("runs consecutive batches of a migration on one kept, authenticated connection", async () => {
    const m = "keep-1";
    const one = await sendBatch(batch({ migrationId: m, batch: 0, firstChunk: 0, chunkCount: 6, streams: 1 }));
    const two = await sendBatch(batch({ migrationId: m, batch: 1, firstChunk: 6, chunkCount: CHUNKS - 6, streams: 1 }));
    await expectIdentical(m);
    const conns = await syncedAfter(receiver, m, 2);
    expect(conns).toHaveLength(2);
    expect(new Set(conns).size).toBe(1);
    // Only the first batch paid for the handshake; the link was tuned once, with BBR where the kernel has it.
    expect(accepted(receiver.lines, m)).toHaveLength(1);
    expect(one.chunks.length + two.chunks.length).toBe(CHUNKS);
    expect(two.wireBytes).toBeLessThan(one.wireBytes);
  });

  it("carries another migration's batch on the kept link after a HELLO for it, with no new TLS handshake", async () => {
    const first = "reauth-1";
    const second = "reauth-2";
    await sendBatch(batch({ migrationId: first, streams: 1 }));
    const r = await sendBatch(batch({ migrationId: second, streams: 1 }));
    expect(r.chunks).toHaveLength(CHUNKS);
    await expectIdentical(second);
    const [one] = await syncedAfter(receiver, first, 1);
    expect(await syncedAfter(receiver, second, 1)).toEqual([one]);
    // One accepted connection for both: the second migration authenticated on it, not on a new one.
    expect(accepted(receiver.lines, first)).toHaveLength(1);
    expect(accepted(receiver.lines, second)).toHaveLength(0);
    // Its batch was written under its own migration (the destination checks BATCH_BEGIN against the HELLO).
    expect(await syncedAfter(receiver, second, 1)).toHaveLength(1);
  });

  it("a HELLO refused on a kept link fails the batch; nothing written behind it reaches the destination", async () => {
    // A destination of its own whose secret changes under the kept link: it refuses the next HELLO.
    const serverSecret = Buffer.from(secret);
    const own = capturingLog();
    const dest = await startDataServer({
      listenHost: "127.0.0.1",
      listenPort: 0,
      secret: serverSecret,
      roots: [root],
      host: "b",
      log: own.log,
      tls: receiverTls,
    });
    try {
      await sendBatch(batch({ migrationId: "reauth-ok", address: dest.address, streams: 1 }));
      serverSecret.fill(7);
      // The HELLO for the next migration goes out with its batch, without waiting for AUTH_OK.
      const second = "reauth-refused";
      const err = await sendBatch(batch({ migrationId: second, address: dest.address, streams: 1 })).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AuthFailedError);
      const refused = await own.waitFor((l) => String(l["msg"]).startsWith("re-authentication refused"));
      expect(refused["claimed"]).toBe(second);
      // Its BATCH_BEGIN and chunks were never read: nothing of it at the destination.
      expect(own.lines.some((l) => l["migrationId"] === second)).toBe(false);
      expect((await readdir(root)).includes(second)).toBe(false);
    } finally {
      closeIdleLinks();
      await dest.close();
    }
  });

  it("keeps a plaintext link too (its destination waits for the next batch on the event loop)", async () => {
    const m = "keep-plain";
    const o = { migrationId: m, address: plain.address, tls: undefined, streams: 1 };
    await sendBatch(batch({ ...o, batch: 0, firstChunk: 0, chunkCount: 6 }));
    await sendBatch(batch({ ...o, batch: 1, firstChunk: 6, chunkCount: CHUNKS - 6 }));
    await expectIdentical(m);
    expect(accepted(plainReceiver.lines, m)).toHaveLength(1);
  });

  it("reconnects once when the kept connection was cut while idle, and lands the batch", async () => {
    const m = "keep-cut";
    await sendBatch(batch({ migrationId: m, batch: 0, firstChunk: 0, chunkCount: 4, streams: 1 }));
    proxy.cut();
    proxy.heal();
    const r = await sendBatch(batch({ migrationId: m, batch: 1, firstChunk: 4, chunkCount: CHUNKS - 4, streams: 1 }));
    expect(r.chunks).toHaveLength(CHUNKS - 4);
    expect(new Set(await syncedAfter(receiver, m, 2)).size).toBe(2);
    await expectIdentical(m);
  });

  it("sends the next batch of a migration right behind the batch before, on the link it lent", async () => {
    const m = "lend-1";
    const sender = capturingLog();
    const lender = capturingLog();
    // The first batch's acknowledgements take 100 ms: the next batch starts while it waits for them.
    proxy.faults.latencyMs = 50;
    const [first, second] = await lendingPair(m, { lender: lender.log, sender: sender.log });
    expect(first.chunks.length + second.chunks.length).toBe(CHUNKS);
    await expectIdentical(m);
    // Without the lending the first link was still busy: the second batch would have dialled.
    const conns = await syncedAfter(receiver, m, 2);
    expect(new Set(conns).size).toBe(1);
    expect(accepted(receiver.lines, m)).toHaveLength(1);
    expect(sender.lines.some((l) => l["msg"] === "batch goes behind the batch before on its link")).toBe(true);
    // On TLS the first batch ended without waiting a round trip for its acknowledgements.
    const early = lender.lines.find((l) => l["msg"] === "batch ends ahead of its acknowledgements");
    expect(early?.["unacknowledged"]).toBeGreaterThan(0);
  });

  it("a batch behind one that fails on the lent link lands on a new connection", async () => {
    const m = "lend-cut";
    const sender = capturingLog();
    proxy.faults.latencyMs = 50; // the first batch still waits for its acknowledgements when the next one queues
    // Once the next batch queued behind the first, the link is cut: both were on it.
    void sender
      .waitFor((l) => l["msg"] === "batch goes behind the batch before on its link")
      .then(() => {
        proxy.cut();
        proxy.heal();
      });
    const [one, two] = await lendingPair(m, { sender: sender.log });
    expect(one.chunks.length + two.chunks.length).toBe(CHUNKS);
    await expectIdentical(m);
    expect(accepted(receiver.lines, m).length).toBeGreaterThanOrEqual(2);
    expect(sender.lines.some((l) => l["msg"] === "kept data link was gone; reconnecting")).toBe(true);
  });

  it("stripes a batch over several connections: each chunk once, in order, fsynced per stripe", async () => {
    const m = "stripe-1";
    const seen: number[] = [];
    const r = await sendBatch(batch({ migrationId: m, streams: 3, onChunk: (c) => seen.push(c.offset) }));
    await expectIdentical(m);
    expect(r.chunks.map((c) => c.offset)).toEqual(Array.from({ length: CHUNKS }, (_, i) => i * MiB));
    expect(r.bytes).toBe(SIZE);
    expect(seen.sort((a, b) => a - b)).toEqual(r.chunks.map((c) => c.offset));
    // Three stripes, each received and fsynced on its own connection.
    const conns = await syncedAfter(receiver, m, 3);
    expect(conns).toHaveLength(3);
    expect(new Set(conns).size).toBe(3);
    // Each stripe is read back and recorded as its own range; together they tile the volume.
    const part = join(root, m, "disk.img.part");
    await readBacks.settled(part);
    const ranges = (await readFile(readBackName(part), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { start: number; end: number; crc32c?: number })
      .filter((x) => x.crc32c !== undefined)
      .map((x) => [x.start, x.end])
      .sort((a, b) => (a[0] ?? 0) - (b[0] ?? 0));
    expect(ranges).toEqual([
      [0, 5 * MiB],
      [5 * MiB, 9 * MiB],
      [9 * MiB, SIZE],
    ]);
  });

  it("a striped batch fails as a whole when one stripe cannot finish", async () => {
    const m = "stripe-cut";
    let cut = false;
    const sending = sendBatch(
      batch({
        migrationId: m,
        streams: 2,
        // The cut lasts until the batch failed: a short resume window ends the reconnecting.
        resumeWindowMs: 1_000,
        onChunk: () => {
          if (cut) return;
          cut = true;
          proxy.cut();
        },
      }),
    ).catch((e: unknown) => e);
    const err = await sending;
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBe("DESTINATION_UNREACHABLE");
    proxy.heal();
    // Sent again in full (as a retry would be), it lands.
    const r = await sendBatch(batch({ migrationId: m, attempt: 1, streams: 2 }));
    expect(r.chunks).toHaveLength(CHUNKS);
    await expectIdentical(m);
  });
});
