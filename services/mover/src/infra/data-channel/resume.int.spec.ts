import { spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { createServer, connect, type Server, type Socket } from "node:net";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DestinationUnreachableError } from "../../errors.js";
import { sendBatch, type SendBatchOptions } from "./client.js";
import { startDataServer, type DataServer } from "./server.js";
import { MiB, silentLog, tempDir } from "#test/support/data-channel.js";
import { FrameWalker } from "#test/support/dwcp-frames.js";
import { FRAME_CODES } from "../../domain/data-channel/frames.js";

const secret = Buffer.alloc(32, 7);
const CHUNKS = 24;
const SIZE = CHUNKS * MiB;

/** Calls `onFrame` with each frame's type and header offset as the stream passes; counts whole frames by type. */
class OffsetWalker extends FrameWalker {
  private type = 0;
  private readonly ended = new Map<number, number>();
  constructor(private readonly onFrame: (type: number, offset: number) => void) {
    super();
  }
  /** Frames of `type` that passed whole. */
  whole(type: number): number {
    return this.ended.get(type) ?? 0;
  }
  protected onHeader(h: Buffer): void {
    this.type = h[5] ?? 0;
    this.onFrame(this.type, h.readUInt32BE(12) * 2 ** 32 + h.readUInt32BE(16));
  }
  protected onPayload(): void {}
  protected override onEnd(): void {
    this.ended.set(this.type, this.whole(this.type) + 1);
  }
}

/**
 * A TCP relay that cuts each of its first `cuts` connections once the destination acknowledged
 * `acks` chunks on it (CHUNK_OK frames), dropping the replies that said so: the sender never
 * sees the last acknowledgements of a cut connection. It records the chunks the destination
 * committed (every CHUNK_OK it sent), and every chunk the sender sent through it.
 */
interface CuttingRelay {
  address: string;
  forwarded: number;
  connections: number;
  /** Offsets the destination acknowledged (committed), including answers the sender never got. */
  committed: Set<number>;
  /** Offsets of CHUNK frames relayed to the destination, in order, resends included. */
  chunksSent: number[];
  /** Chunks sent again after the destination had committed them. */
  resentCommitted: number[];
  close(): Promise<void>;
}

const { BATCH_BEGIN, BATCH_OK, CHUNK, CHUNK_OK, BATCH_ERR, RESUME_AT } = FRAME_CODES;

/**
 * `quiet`: each cut connection first carries `quiet.after` whole batches, then forwards no answer
 * of the next batch to the sender (the sender sees a kept link that never answered) and is cut
 * once the destination acknowledged `acks` of its chunks.
 */
async function startCuttingRelay(
  target: string,
  acks: number,
  cuts: number,
  quiet?: { after: number },
): Promise<CuttingRelay> {
  const at = target.lastIndexOf(":");
  const [host, port] = [target.slice(0, at), Number(target.slice(at + 1))];
  const sockets = new Set<Socket>();
  const relay: CuttingRelay = {
    address: "",
    forwarded: 0,
    connections: 0,
    committed: new Set(),
    chunksSent: [],
    resentCommitted: [],
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
    let oks = 0;
    let batches = 0;
    const fromSender = new OffsetWalker((type, offset) => {
      if (type !== CHUNK) return;
      relay.chunksSent.push(offset);
      if (relay.committed.has(offset)) relay.resentCommitted.push(offset);
    });
    const fromDestination = new OffsetWalker((type, offset) => {
      if (type === BATCH_OK) batches += 1;
      if (type !== CHUNK_OK) return;
      if (quiet === undefined || batches >= quiet.after) oks += 1;
      relay.committed.add(offset);
    });
    const muted = (): boolean => cut && quiet !== undefined && batches >= quiet.after;
    client.on("data", (d: Buffer) => {
      // After a cut, what the sender still writes is dropped here, not forwarded.
      if (upstream.destroyed) return;
      relay.forwarded += d.length;
      fromSender.walk(d);
      upstream.write(d);
    });
    upstream.on("data", (d: Buffer) => {
      const wasMuted = muted();
      fromDestination.walk(d);
      if (cut && oks >= acks && (quiet === undefined || batches >= quiet.after)) {
        // The acknowledgements in `d` are lost with the connection; both directions are gone.
        upstream.destroy();
        client.destroy();
        return;
      }
      if (!wasMuted) client.write(d);
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

/**
 * A TCP relay that abandons its first connection the way a WAN outage that heals does. Once
 * `forward` chunks crossed it ("none": from the BATCH_BEGIN on), it holds what the sender writes
 * next and cuts only the sender's side once a whole chunk is held (the sender resumes on a new
 * connection); the destination's side stays open. When the
 * destination answers the resume (RESUME_AT), the relay delivers the held chunks on the abandoned
 * connection, as TCP's retransmission would, and passes RESUME_AT on once the old session has
 * acknowledged them, refused them (BATCH_ERR) or closed: a destination that let the old session
 * commit them after RESUME_AT said they were not would have them sent again.
 */
interface AbandoningRelay extends CuttingRelay {
  /** Whole chunks held back from the abandoned connection and delivered after the resume. */
  held: number;
  /** What the old session answered for them: "acked" (committed) or "refused" (BATCH_ERR or closed). */
  oldSession: "acked" | "refused" | undefined;
}

async function startAbandoningRelay(target: string, forward: number | "none"): Promise<AbandoningRelay> {
  const at = target.lastIndexOf(":");
  const [host, port] = [target.slice(0, at), Number(target.slice(at + 1))];
  const sockets = new Set<Socket>();
  const relay: AbandoningRelay = {
    address: "",
    forwarded: 0,
    connections: 0,
    committed: new Set(),
    chunksSent: [],
    resentCommitted: [],
    held: 0,
    oldSession: undefined,
    close: () => Promise.resolve(),
  };
  /** Set once the first connection is abandoned: delivers what it held, resolves with the old session's answer. */
  let deliverHeld: (() => Promise<void>) | undefined;
  const server: Server = createServer((client) => {
    relay.connections += 1;
    const abandoned = relay.connections === 1;
    const upstream = connect({ host, port });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    let resumed = false;
    let holdingFrom: number | undefined;
    const fromSender = new OffsetWalker((type, offset) => {
      // "none": the BATCH_BEGIN too is held, and arrives after the resume's.
      if (abandoned && forward === "none" && type === BATCH_BEGIN) holdingFrom ??= 0;
      if (type !== CHUNK) return;
      relay.chunksSent.push(offset);
      if (relay.committed.has(offset)) relay.resentCommitted.push(offset);
    });
    const fromDestination = new OffsetWalker((type, offset) => {
      if (type === CHUNK_OK) relay.committed.add(offset);
      if (type === RESUME_AT) resumed = true;
    });
    const held: Buffer[] = [];
    client.on("data", (d: Buffer) => {
      fromSender.walk(d);
      if (holdingFrom === undefined) {
        relay.forwarded += d.length;
        upstream.write(d);
        if (abandoned && typeof forward === "number" && fromSender.whole(CHUNK) >= forward)
          holdingFrom = fromSender.whole(CHUNK);
        return;
      }
      held.push(d);
      if (deliverHeld === undefined && fromSender.whole(CHUNK) > holdingFrom) {
        relay.held = fromSender.whole(CHUNK) - holdingFrom;
        deliverHeld = () => deliver(upstream, fromSender, fromDestination, held);
        client.destroy(); // the sender's side only: the destination's stays open
      }
    });
    let toSender = Promise.resolve();
    upstream.on("data", (d: Buffer) => {
      fromDestination.walk(d);
      if (client.destroyed) return;
      if (resumed && deliverHeld !== undefined) {
        const held = deliverHeld;
        deliverHeld = undefined;
        toSender = toSender.then(held);
      }
      toSender = toSender.then(() => {
        if (!client.destroyed) client.write(d);
      });
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  /** Write `held` to the abandoned connection; resolve once its session answered for all of it. */
  const deliver = (upstream: Socket, sent: OffsetWalker, answers: OffsetWalker, held: Buffer[]): Promise<void> =>
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (answers.whole(BATCH_ERR) > 0 || upstream.destroyed) relay.oldSession = "refused";
        else if (answers.whole(CHUNK_OK) >= sent.whole(CHUNK)) relay.oldSession = "acked";
        else return;
        upstream.off("data", check);
        resolve();
      };
      upstream.on("data", check);
      upstream.once("close", check);
      for (const d of held) upstream.write(d);
      check();
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
  it("resumes at the first chunk the destination has not committed; no committed chunk is sent again", async () => {
    // Cut after 6 chunks were acknowledged on the first connection, and after 6 more on the
    // second; the sender never sees the acknowledgements that triggered each cut.
    const relay = await startCuttingRelay(server.address, 6, 2);
    try {
      const r = await sendBatch(batch(relay.address, { destDir: "resumed" }));
      expect(relay.connections).toBe(3); // two cut, the third finished the run
      expect(r.chunks.map((c) => c.offset)).toEqual(Array.from({ length: CHUNKS }, (_, i) => i * MiB));
      const [a, b] = await Promise.all([readFile(source), readFile(join(root, "resumed", "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
      // The destination answered the resumes with its own count: nothing it had committed, even
      // whose acknowledgement was lost, crossed again; only chunks cut in flight did.
      expect(relay.committed.size).toBeGreaterThanOrEqual(12);
      expect(relay.resentCommitted).toEqual([]);
      expect(new Set(relay.chunksSent).size).toBe(CHUNKS);
      expect(r.breakdown.data).toBe(SIZE);
    } finally {
      await relay.close();
    }
  });

  it("fences a stripe's old session when it resumes: chunks TCP delivers on it late are not committed", async () => {
    // Two stripes; the first connection is abandoned after 3 chunks with at least one more held.
    const relay = await startAbandoningRelay(server.address, 3);
    try {
      const r = await sendBatch(batch(relay.address, { destDir: "abandoned", streams: 2 }));
      expect(relay.connections).toBe(3); // two stripes, one resumed
      expect(relay.held).toBeGreaterThan(0);
      expect(relay.oldSession).toBe("refused");
      expect(r.chunks.map((c) => c.offset)).toEqual(Array.from({ length: CHUNKS }, (_, i) => i * MiB));
      const [a, b] = await Promise.all([readFile(source), readFile(join(root, "abandoned", "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
      expect(relay.resentCommitted).toEqual([]);
    } finally {
      await relay.close();
    }
  });

  it("refuses a stripe's first BATCH_BEGIN that TCP delivers only after the stripe resumed", async () => {
    const relay = await startAbandoningRelay(server.address, "none");
    try {
      const r = await sendBatch(batch(relay.address, { destDir: "late-begin", streams: 2 }));
      expect(relay.connections).toBe(3);
      expect(relay.held).toBeGreaterThan(0);
      expect(relay.oldSession).toBe("refused");
      expect(r.chunks).toHaveLength(CHUNKS);
      const [a, b] = await Promise.all([readFile(source), readFile(join(root, "late-begin", "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
      expect(relay.resentCommitted).toEqual([]);
    } finally {
      await relay.close();
    }
  });

  it("resumes on a fresh connection when a kept link that carried chunks failed before any answer", async () => {
    // The first batch keeps the link; the next one's answers never reach the sender, and its
    // link is cut once the destination committed 6 of its chunks.
    const relay = await startCuttingRelay(server.address, 6, 1, { after: 1 });
    try {
      const half = CHUNKS / 2;
      await sendBatch(batch(relay.address, { destDir: "kept", chunkCount: half }));
      const before = relay.chunksSent.length;
      const r = await sendBatch(
        batch(relay.address, { destDir: "kept", batch: 1, firstChunk: half, chunkCount: half }),
      );
      expect(relay.connections).toBe(2);
      expect(r.chunks).toHaveLength(half);
      const [a, b] = await Promise.all([readFile(source), readFile(join(root, "kept", "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
      expect(relay.committed.size).toBeGreaterThanOrEqual(half + 6);
      expect(relay.resentCommitted).toEqual([]);
      expect(new Set(relay.chunksSent.slice(before)).size).toBe(half);
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

describe("a sending mover killed mid-batch", () => {
  it("resumes on the next delivery at the first chunk the destination has not committed", async () => {
    const relay = await startCuttingRelay(server.address, 0, 0);
    const o = batch(relay.address, { destDir: "restarted", delivery: 1, bandwidthLimitBytesPerSec: 8 * MiB });
    const { log: _log, secret: _secret, ...fields } = o;
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        resolve(import.meta.dirname, "../../../../../test/support/batch-sender-process.ts"),
        JSON.stringify({ ...fields, secretHex: secret.toString("hex") }),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    try {
      // kill -9 once 8 chunks were acknowledged: no goodbye, no BATCH_END.
      let acked = 0;
      for await (const line of createInterface({ input: child.stdout })) {
        if ((JSON.parse(line) as { acked?: number }).acked !== undefined) acked += 1;
        if (acked === 8) break;
      }
      child.kill("SIGKILL");
      await exited;
      expect(acked).toBe(8);
      const before = relay.chunksSent.length;
      // The work item's next delivery, in a fresh process state: it holds no record of the run.
      const r = await sendBatch({ ...o, delivery: 2, bandwidthLimitBytesPerSec: undefined });
      expect(r.chunks.map((c) => c.offset)).toEqual(Array.from({ length: CHUNKS }, (_, i) => i * MiB));
      const [a, b] = await Promise.all([readFile(source), readFile(join(root, "restarted", "disk.img.part"))]);
      expect(b.equals(a)).toBe(true);
      expect(relay.resentCommitted).toEqual([]);
      // Only the chunks the killed sender had not got committed crossed again.
      const again = relay.chunksSent.slice(before);
      expect(again.length).toBeLessThanOrEqual(CHUNKS - 8);
      expect(new Set(relay.chunksSent).size).toBe(CHUNKS);
    } finally {
      child.kill("SIGKILL");
      await relay.close();
    }
  });
});
