import { randomBytes } from "node:crypto";
import { createServer, connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32c, strongHashSync } from "#native/index.js";
import type { CompressionChoice } from "../../domain/data-channel/compression.js";
import { ChecksumMismatchError } from "../../errors.js";
import { BaseSums } from "../../domain/data-channel/base-sums.js";
import { encodeControl, type ControlFrame } from "../../domain/data-channel/frames.js";
import { ClientSession } from "./client-session.js";
import type { SealedWriter } from "./sealed-link.js";
import type { SocketFrameReader } from "./frame-reader.js";
import { silentLog } from "#test/support/data-channel.js";

// The sender's last loop ("resend what is asked for, then wait for the next reply") must not
// miss a reply that lands between its look at the resend queue and its wait: a CHUNK_ERR read
// in the same TCP segment as the CHUNK_OK before it did exactly that, and the batch sat until the
// 60 s idle timeout with its resend queued (a CI failure of the bit-flip chaos scenario).
describe("ClientSession", () => {
  let client: Socket;
  let peer: Socket;
  const server = createServer((s) => {
    peer = s;
    s.resume(); // discard what the session writes
  });
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as { port: number };
    client = connect({ port, host: "127.0.0.1" });
    await new Promise<void>((r) => client.once("connect", r));
  });
  afterAll(async () => {
    client.destroy();
    peer?.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const newSession = (chunkCount: number, compression: CompressionChoice, baseSums?: BaseSums): ClientSession =>
    new ClientSession({
      ...(baseSums === undefined ? {} : { incremental: true, baseSums }),
      socket: client,
      reader: { abort: () => undefined } as unknown as SocketFrameReader,
      chunkCount,
      maxResends: 3,
      sendfileFrom: undefined,
      bucket: () => undefined,
      compression,
      onChunk: undefined,
      log: silentLog,
    });

  /** A chunk of `data` at `offset`, one segment, nothing zero. */
  const wholeChunk = (offset: number, data: Buffer) => ({
    offset,
    length: data.length,
    crc32c: crc32c(data),
    blake3: strongHashSync(data).toString("base64url"),
    zero: false,
    segments: [{ relOffset: 0, length: data.length }],
    data,
  });

  it("a reply that came while nobody waited wakes the next changed() at once", async () => {
    const session = newSession(2, { codec: "none", level: 0 });
    const data = Buffer.alloc(4096, 7);
    for (const offset of [0, 4096]) {
      await session.sendChunk(wholeChunk(offset, data));
    }
    // Both replies are handled before the sender waits (as when they arrive in one read).
    session.onReply({ kind: "CHUNK_OK", offset: 0 });
    session.onReply({ kind: "CHUNK_ERR", offset: 4096, failure: { code: "CHECKSUM_MISMATCH", message: "flipped" } });
    const woke = await Promise.race([
      session.changed().then(() => "woke"),
      // A bound on the failure mode only: before the fix this never resolved.
      new Promise<string>((r) => setTimeout(() => r("still waiting after 2 s"), 2000).unref()),
    ]);
    expect(woke).toBe("woke");
    expect(session.takeResend()).toBe(4096);
    expect(session.allAcked).toBe(false);
  });

  it("a chunk that fails its check after the batch ended early fails the batch for a retry, not a resend", async () => {
    const session = newSession(1, { codec: "none", level: 0 });
    const data = Buffer.alloc(4096, 9);
    await session.sendChunk(wholeChunk(0, data));
    // BATCH_END went ahead of the acknowledgements (a lent link): the next batch is behind it.
    session.batchEndSent = true;
    let thrown: unknown;
    try {
      session.onReply({ kind: "CHUNK_ERR", offset: 0, failure: { code: "CHECKSUM_MISMATCH", message: "flipped" } });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ChecksumMismatchError);
    expect((thrown as ChecksumMismatchError).retryable).toBe(true);
    expect(session.takeResend()).toBeUndefined();
  });

  it("on a sealed link a held BATCH_BEGIN, the chunk and its BATCH_END go out as one write", async () => {
    const writes: Uint8Array[][] = [];
    const sealer = {
      busy: false,
      stop: () => undefined,
      send: (parts: readonly Uint8Array[]) => {
        writes.push(parts.map((p) => Uint8Array.from(p)));
        return Promise.resolve();
      },
    } as unknown as SealedWriter;
    const session = new ClientSession({
      socket: client,
      reader: { abort: () => undefined } as unknown as SocketFrameReader,
      sealer,
      chunkCount: 1,
      maxResends: 3,
      sendfileFrom: undefined,
      bucket: () => undefined,
      compression: { codec: "none", level: 0 },
      onChunk: undefined,
      log: silentLog,
    });
    const begin: ControlFrame = {
      kind: "BATCH_BEGIN",
      begin: {
        migrationId: "m-1",
        batch: 0,
        attempt: 1,
        destDir: "d",
        destName: "v",
        volumeSizeBytes: 4096,
        chunkSizeBytes: 4096,
        firstChunk: 0,
        chunkCount: 1,
      },
    };
    const end: ControlFrame = { kind: "BATCH_END", chunkCount: 1 };
    await session.holdControl(begin);
    expect(writes).toHaveLength(0);
    const data = Buffer.alloc(4096, 5);
    await session.sendChunk(wholeChunk(0, data), end);
    expect(writes).toHaveLength(1);
    const parts = writes[0] as Uint8Array[];
    // BATCH_BEGIN, the chunk's head, its one segment, BATCH_END: a record each.
    expect(parts).toHaveLength(4);
    expect(Buffer.from(parts[0] as Uint8Array).equals(Buffer.from(encodeControl(begin)))).toBe(true);
    expect(Buffer.from(parts[2] as Uint8Array).equals(data)).toBe(true);
    expect(Buffer.from(parts[3] as Uint8Array).equals(Buffer.from(encodeControl(end)))).toBe(true);
    expect(session.wireBytes).toBe(parts.reduce((n, p) => n + p.length, 0));
  });

  it("stops trying to compress after a run of incompressible chunks, and tries again later", async () => {
    const session = newSession(7, { codec: "zstd", level: 1 });
    const size = 64 * 1024;
    const text = Buffer.from("a chunk of a VM disk that compresses well\n".repeat(size / 42 + 1).slice(0, size));
    const chunks = [0, 1, 2, 3].map(() => randomBytes(size)).concat([text, text, text]);
    for (const [i, data] of chunks.entries()) {
      await session.sendChunk({
        offset: i * size,
        length: size,
        crc32c: crc32c(data),
        blake3: strongHashSync(data).toString("base64url"),
        zero: false,
        segments: [{ relOffset: 0, length: size }],
        data,
      });
    }
    const packed = chunks.map((_, i) => (session.counts.get(i * size)?.packedIn ?? 0) > 0);
    // Four misses in a row: the fifth chunk is sent untried; the sixth is tried and pays.
    expect(packed).toEqual([false, false, false, false, false, true, true]);
  });

  it("with the base's sums ahead, sends changed chunks' data at once, refers to what the base holds", async () => {
    const size = 4096;
    const same = Buffer.alloc(size, 1);
    const changed = Buffer.alloc(size, 2);
    const sums = new BaseSums(size);
    const sumOf = (b: Buffer) => ({ crc32c: crc32c(b), blake3: strongHashSync(b) });
    // The base holds `same` at 0 and other bytes at 4096; chunk 2 is beyond what the sums cover.
    expect(sums.add(0, [sumOf(same), sumOf(Buffer.alloc(size, 3))])).toBeUndefined();
    const session = newSession(3, { codec: "none", level: 0 }, sums);
    await session.sendChunk(wholeChunk(0, same));
    await session.sendChunk(wholeChunk(size, changed));
    expect(session.mayEndEarly).toBe(true);
    await session.sendChunk(wholeChunk(2 * size, same));
    const counts = [0, size, 2 * size].map((o) => session.counts.get(o));
    // A reference expected to hit, the data of the changed chunk, a reference as before.
    expect(counts.map((c) => [c?.baseReused, c?.data])).toEqual([
      [size, size],
      [0, size],
      [size, size],
    ]);
    // The uncovered reference's answer may ask for data: BATCH_END waits for it.
    expect(session.mayEndEarly).toBe(false);
    session.onReply({ kind: "CHUNK_ERR", offset: 2 * size, failure: { code: "BASE_MISMATCH", message: "differs" } });
    expect(session.takeResend()).toBe(2 * size);
    expect(session.mayEndEarly).toBe(true);
  });

  it("a reference the sums said would hit that misses after BATCH_END fails the batch for a retry", async () => {
    const size = 4096;
    const data = Buffer.alloc(size, 5);
    const sums = new BaseSums(size);
    sums.add(0, [{ crc32c: crc32c(data), blake3: strongHashSync(data) }]);
    const session = newSession(1, { codec: "none", level: 0 }, sums);
    await session.sendChunk(wholeChunk(0, data));
    expect(session.mayEndEarly).toBe(true);
    session.batchEndSent = true;
    expect(() =>
      session.onReply({ kind: "CHUNK_ERR", offset: 0, failure: { code: "BASE_MISMATCH", message: "base changed" } }),
    ).toThrow(ChecksumMismatchError);
    expect(session.takeResend()).toBeUndefined();
  });
});
