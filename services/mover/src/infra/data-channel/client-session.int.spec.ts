import { createServer, connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32c, strongHashSync } from "#native/index.js";
import { ClientSession } from "./client-session.js";
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

  it("a reply that came while nobody waited wakes the next changed() at once", async () => {
    const session = new ClientSession({
      socket: client,
      reader: { abort: () => undefined } as unknown as SocketFrameReader,
      chunkCount: 2,
      maxResends: 3,
      sendfileFrom: undefined,
      bucket: undefined,
      compression: { codec: "none", level: 0 },
      onChunk: undefined,
      log: silentLog,
    });
    const data = Buffer.alloc(4096, 7);
    for (const offset of [0, 4096]) {
      await session.sendChunk({
        offset,
        length: 4096,
        crc32c: crc32c(data),
        blake3: strongHashSync(data).toString("base64url"),
        zero: false,
        segments: [{ relOffset: 0, length: 4096 }],
        data,
      });
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
});
