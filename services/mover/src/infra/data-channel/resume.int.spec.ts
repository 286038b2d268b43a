import { randomFillSync } from "node:crypto";
import { createServer, connect, type Server, type Socket } from "node:net";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DestinationUnreachableError } from "../../errors.js";
import { sendBatch, type SendBatchOptions } from "./client.js";
import { startDataServer, type DataServer } from "./server.js";
import { MiB, silentLog, tempDir } from "#test/support/data-channel.js";
import { FRAME_CODES, HEADER_BYTES } from "../../domain/data-channel/frames.js";

const secret = Buffer.alloc(32, 7);
const CHUNKS = 24;
const SIZE = CHUNKS * MiB;

/**
 * A TCP relay that cuts each of its first `cuts` connections once the destination acknowledged
 * `acks` chunks on it (CHUNK_OK frames), and counts every byte it relays from the sender.
 */
interface CuttingRelay {
  address: string;
  forwarded: number;
  connections: number;
  /** Sender bytes each cut connection had relayed when it was cut. */
  cutAfter: number[];
  close(): Promise<void>;
}

const CHUNK_OK = FRAME_CODES.CHUNK_OK;

async function startCuttingRelay(target: string, acks: number, cuts: number): Promise<CuttingRelay> {
  const at = target.lastIndexOf(":");
  const [host, port] = [target.slice(0, at), Number(target.slice(at + 1))];
  const sockets = new Set<Socket>();
  const relay: CuttingRelay = {
    address: "",
    forwarded: 0,
    connections: 0,
    cutAfter: [],
    close: () => Promise.resolve(),
  };
  const server: Server = createServer((client) => {
    relay.connections += 1;
    const cut = relay.connections <= cuts;
    const upstream = connect({ host, port });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    let sent = 0;
    let replies = Buffer.alloc(0);
    let oks = 0;
    client.on("data", (d: Buffer) => {
      // After a cut, what the sender still writes is dropped here, not forwarded.
      if (upstream.destroyed) return;
      sent += d.length;
      relay.forwarded += d.length;
      upstream.write(d);
    });
    upstream.on("data", (d: Buffer) => {
      replies = Buffer.concat([replies, d]);
      // The destination's frames: a 32-byte header (type at 5, payload length at 8) and payload.
      while (replies.length >= HEADER_BYTES && replies.length >= HEADER_BYTES + replies.readUInt32BE(8)) {
        if (replies[5] === CHUNK_OK) oks += 1;
        replies = replies.subarray(HEADER_BYTES + replies.readUInt32BE(8));
      }
      if (cut && oks >= acks) {
        // The acknowledgements reach the sender; then both directions are gone.
        relay.cutAfter.push(sent);
        upstream.destroy();
        client.end(d);
        client.once("finish", () => client.destroy());
        return;
      }
      client.write(d);
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const a = server.address();
  relay.address = `127.0.0.1:${typeof a === "object" && a !== null ? a.port : 0}`;
  relay.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return relay;
}

let work: string;
let root: string;
let source: string;
let server: DataServer;

beforeAll(async () => {
  work = await tempDir("resume");
  root = join(work, "dest");
  source = join(work, "src.img");
  await mkdir(root, { recursive: true });
  // Random bytes: nothing compressed or skipped, so the relayed bytes count the chunks sent.
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

function batch(address: string, over: Partial<SendBatchOptions> = {}): SendBatchOptions {
  return {
    address,
    secret,
    sourceHost: "src",
    migrationId: "mig-resume",
    batch: 0,
    attempt: 0,
    sourcePath: source,
    destDir: "vm",
    destName: "disk.img",
    volumeSizeBytes: SIZE,
    chunkSizeBytes: MiB,
    firstChunk: 0,
    chunkCount: CHUNKS,
    compression: "none",
    streams: 1,
    log: silentLog,
    ...over,
  };
}

describe("a run whose connection drops", () => {
  it("resumes at the first unacknowledged chunk: identical bytes, committed chunks not sent again", async () => {
    // Cut after 6 chunks were acknowledged on the first connection, and after 6 more on the second.
    const relay = await startCuttingRelay(server.address, 6, 2);
    try {
      const r = await sendBatch(batch(relay.address, { destDir: "resumed" }));
      expect(relay.connections).toBe(3); // two cut, the third finished the run
      expect(r.chunks.map((c) => c.offset)).toEqual(Array.from({ length: CHUNKS }, (_, i) => i * MiB));
      const [a, b] = await Promise.all([readFile(source), readFile(join(root, "resumed", "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
      // Only what was unacknowledged at each cut crossed again: the 12 acknowledged chunks did
      // not. Sent whole again, the run would relay both cut connections' bytes on top of SIZE.
      // One chunk per cut may cross twice: an acknowledgement that reached the sender's socket
      // as its write failed is lost with the connection, so that run resumes one chunk earlier.
      const [first = 0, second = 0] = relay.cutAfter;
      const framing = 64 * 1024;
      const ackInFlight = 2 * MiB;
      expect(relay.forwarded).toBeLessThanOrEqual(SIZE + first + second - 12 * MiB + ackInFlight + framing);
      expect(r.breakdown.data).toBe(SIZE);
    } finally {
      await relay.close();
    }
  });

  it("fails the batch once the destination stays unreachable past the resume window", async () => {
    const failing = await startCuttingRelay(server.address, 2, 1_000); // every connection is cut
    try {
      const err = await sendBatch(batch(failing.address, { destDir: "gone", resumeWindowMs: 3_000 })).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DestinationUnreachableError);
      expect(failing.connections).toBeGreaterThan(1); // it did try to resume
    } finally {
      await failing.close();
    }
  });
});
