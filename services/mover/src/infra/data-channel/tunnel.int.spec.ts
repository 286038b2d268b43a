// Tunnels over the data channel (mTLS with provisioned certificates, and plaintext): raw bytes
// between a unix socket at the source and one at the destination, byte-identical both ways,
// each direction's end passed on as a half-close, compressed towards the destination when asked;
// unauthenticated and unexpected tunnels refused.
import { createHash, randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { provision } from "#common/credentials/provision.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import { capturingLog, linkTlsOf, silentLog, tempDir } from "#test/support/data-channel.js";
import { AuthFailedError } from "../../errors.js";
import { startDataServer, type DataServer } from "./server.js";
import { listenTunnel, openTunnel, TunnelRefusedError, type TunnelOptions } from "./tunnel.js";

const secret = randomBytes(32);
let work: string;
let tlsServer: DataServer;
let plainServer: DataServer;
let senderTls: LinkTls;
const receiver = capturingLog();

/** What a destination-side socket saw of one connection, and what it sends back once the peer half-closed. */
interface Echo {
  server: Server;
  path: string;
  /** Per connection: sha256 of every byte received before the peer's end. */
  received: Promise<{ digest: string; bytes: number }>[];
}

/** A unix socket that records each connection's bytes and, after the peer's end, answers `reply` and ends. */
async function echoSocket(path: string, reply: Buffer): Promise<Echo> {
  const received: Echo["received"] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => undefined); // a tunnel cut mid-stream: the reply has nobody to go to
    const hash = createHash("sha256");
    let bytes = 0;
    received.push(
      new Promise((resolve) => {
        s.on("data", (d: Buffer) => {
          hash.update(d);
          bytes += d.length;
        });
        s.on("end", () => {
          resolve({ digest: hash.digest("hex"), bytes });
          // The peer's half-close arrived; this direction is still open.
          s.end(reply);
        });
      }),
    );
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return { server, path, received };
}

/** Writes `payload` in uneven pieces, half-closes, and collects what comes back until the peer ends. */
async function exchange(socket: Socket, payload: Buffer): Promise<Buffer> {
  const parts: Buffer[] = [];
  socket.on("data", (d: Buffer) => parts.push(d));
  const ended = new Promise<void>((resolve, reject) => {
    socket.once("end", () => resolve());
    socket.once("error", reject);
  });
  for (let at = 0; at < payload.length; ) {
    const n = Math.min(payload.length - at, 1 + ((at * 7919) % 300_000));
    if (!socket.write(payload.subarray(at, at + n))) await new Promise((r) => socket.once("drain", r));
    at += n;
  }
  socket.end();
  await ended;
  return Buffer.concat(parts);
}

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

/** Host a's tunnel on `channel` of `migrationId` to the TLS data server. */
const tlsTunnel = (migrationId: string, channel: string, more: Partial<TunnelOptions> = {}): TunnelOptions => ({
  address: tlsServer.address,
  secret,
  sourceHost: "a",
  migrationId,
  channel,
  tls: { tls: senderTls, destHost: "b" },
  ...more,
});

beforeAll(async () => {
  work = await tempDir("tunnel");
  const pki = await provision(join(work, "pki"), { hosts: ["a", "b", "c"] });
  senderTls = linkTlsOf(pki, "mover-a");
  const common = { listenHost: "127.0.0.1", listenPort: 0, secret, roots: [work] };
  tlsServer = await startDataServer({ ...common, host: "b", log: receiver.log, tls: linkTlsOf(pki, "mover-b") });
  plainServer = await startDataServer({ ...common, host: "b", log: silentLog });
});

afterAll(async () => {
  await tlsServer?.close();
  await plainServer?.close();
  await rm(work, { recursive: true, force: true });
});

describe("data-channel tunnels", () => {
  for (const mode of ["tls", "plaintext"] as const) {
    it(`carries bytes unchanged both ways and passes each half-close on (${mode})`, async () => {
      const server = mode === "tls" ? tlsServer : plainServer;
      const reply = randomBytes(3 * 1024 * 1024 + 17);
      const echo = await echoSocket(join(work, `dest-${mode}.sock`), reply);
      const revoke = server.tunnels.allow(`live-${mode}`, "a", { migration: echo.path });
      const o: TunnelOptions = {
        address: server.address,
        secret,
        sourceHost: "a",
        migrationId: `live-${mode}`,
        channel: "migration",
        ...(mode === "tls" ? { tls: { tls: senderTls, destHost: "b" } } : {}),
      };
      const listener = await listenTunnel(join(work, `src-${mode}.sock`), o, silentLog);
      try {
        // Two connections at once: one tunnel each (as multifd channels use them).
        const payloads = [randomBytes(8 * 1024 * 1024 + 3), randomBytes(100_001)];
        const answers = await Promise.all(payloads.map((p) => exchange(connect(listener.path), p)));
        const got = await Promise.all(echo.received);
        expect(got.map((g) => g.digest).sort()).toEqual(payloads.map(sha).sort());
        expect(got.map((g) => g.bytes).sort((x, y) => x - y)).toEqual(
          payloads.map((p) => p.length).sort((x, y) => x - y),
        );
        for (const a of answers) expect(sha(a)).toBe(sha(reply));
        // On TLS the source → destination bytes went as sealed records, pumped natively at both ends.
        if (mode === "tls") {
          const opened = receiver.lines.filter((l) => l.migrationId === "live-tls" && l.msg === "tunnel open");
          expect(opened.map((l) => l.sealed)).toEqual([true, true]);
        }
      } finally {
        revoke();
        await listener.close();
        echo.server.close();
      }
    }, 60_000);
  }

  for (const codec of ["zstd", "lz4"] as const) {
    it(`compresses the source's bytes with ${codec} when asked, and they arrive unchanged`, async () => {
      // A VM disk's mix: random, repeated text and zeros, in pieces that straddle blocks.
      const text = Buffer.from("Dec  6 07:15:17 host kernel: virtio_blk virtio2: [vda] 4194304 512-byte\n");
      const piece = (i: number): Buffer =>
        i % 3 === 0
          ? randomBytes(100_000)
          : i % 3 === 1
            ? Buffer.alloc(300_000, text.toString())
            : Buffer.alloc(200_000);
      const payload = Buffer.concat(Array.from({ length: 24 }, (_, i) => piece(i)));
      const reply = randomBytes(64 * 1024 + 5);
      const echo = await echoSocket(join(work, `dest-${codec}.sock`), reply);
      const migrationId = `live-${codec}`;
      const revoke = tlsServer.tunnels.allow(migrationId, "a", { nbd: echo.path });
      const o = tlsTunnel(migrationId, "nbd", { compression: codec });
      const listener = await listenTunnel(join(work, `src-${codec}.sock`), o, silentLog);
      try {
        const answer = await exchange(connect(listener.path), payload);
        const [got] = await Promise.all(echo.received);
        expect(got).toEqual({ digest: sha(payload), bytes: payload.length });
        expect(sha(answer)).toBe(sha(reply));
        const closed = await receiver.waitFor((l) => l.migrationId === migrationId && l.msg === "tunnel closed");
        // A third of the payload is random: the wire carries little more than that.
        expect(closed.wireBytesIn).toBeLessThan(payload.length / 2);
        expect(closed.bytesOut).toBe(reply.length);
        expect(receiver.lines.find((l) => l.migrationId === migrationId && l.msg === "tunnel open")?.codec).toBe(codec);
      } finally {
        revoke();
        await listener.close();
        echo.server.close();
      }
    }, 60_000);
  }

  it("cuts a sealed tunnel whose source goes away mid-stream: the destination never takes it for the end", async () => {
    const migrationId = "live-cut";
    const echo = await echoSocket(join(work, "dest-cut.sock"), Buffer.from("never"));
    const revoke = tlsServer.tunnels.allow(migrationId, "a", { migration: echo.path });
    const listener = await listenTunnel(join(work, "src-cut.sock"), tlsTunnel(migrationId, "migration"), silentLog);
    try {
      const qemu = connect(listener.path);
      qemu.on("error", () => undefined);
      qemu.write(randomBytes(256 * 1024));
      await receiver.waitFor((l) => l.migrationId === migrationId && l.msg === "tunnel open" && l.sealed === true);
      // The source mover closes its tunnels (as when a migration is cancelled) with the stream unfinished.
      await listener.close();
      const cut = await receiver.waitFor((l) => l.migrationId === migrationId && l.msg === "sealed tunnel cut");
      expect((cut.err as { detail?: string }).detail).toBe("SEALED_TRUNCATED");
      await receiver.waitFor((l) => l.migrationId === migrationId && l.msg === "tunnel closed");
      qemu.destroy();
    } finally {
      revoke();
      await listener.close();
      echo.server.close();
    }
  }, 30_000);

  it("keeps a tunnel on loopback raw when the compression is auto", async () => {
    const echo = await echoSocket(join(work, "dest-auto.sock"), Buffer.from("ok"));
    const revoke = tlsServer.tunnels.allow("live-auto", "a", { nbd: echo.path });
    try {
      // Raw bytes on the returned socket: no sealed records (listenTunnel's pumps write those).
      const open = await openTunnel(tlsTunnel("live-auto", "nbd", { sealed: false }));
      expect(open.compression.codec).toBe("none");
      const payload = Buffer.alloc(100_000);
      open.socket.resume(); // openTunnel hands the socket over paused
      expect(sha(await exchange(open.socket, payload))).toBe(sha(Buffer.from("ok")));
      const [got] = await Promise.all(echo.received);
      expect(got).toEqual({ digest: sha(payload), bytes: payload.length });
    } finally {
      revoke();
      echo.server.close();
    }
  }, 30_000);

  it("refuses a tunnel of an unexpected migration, source host or channel", async () => {
    const echo = await echoSocket(join(work, "dest-refuse.sock"), Buffer.from("x"));
    const revoke = tlsServer.tunnels.allow("live-expected", "a", { nbd: echo.path });
    const base = tlsTunnel("live-expected", "nbd", { sealed: false });
    try {
      await expect(openTunnel({ ...base, migrationId: "live-other" })).rejects.toThrow(TunnelRefusedError);
      await expect(openTunnel({ ...base, channel: "migration" })).rejects.toThrow(
        /expects a tunnel on channel migration/,
      );
      // Host a's certificate cannot speak for host c.
      await expect(openTunnel({ ...base, sourceHost: "c" })).rejects.toThrow(AuthFailedError);
      // The wrong cluster secret proves nothing.
      await expect(openTunnel({ ...base, secret: randomBytes(32) })).rejects.toThrow(AuthFailedError);
      // Once the migration is over, its tunnels are refused.
      const ok = await openTunnel(base);
      ok.socket.destroy();
      revoke();
      await expect(openTunnel(base)).rejects.toThrow(TunnelRefusedError);
      expect(echo.received.length).toBe(1);
      const refusals = receiver.lines.filter((l) => l.code === "TUNNEL_REFUSED");
      expect(refusals.map((l) => l.migrationId)).toEqual(["live-other", "live-expected", "live-expected"]);
    } finally {
      revoke();
      echo.server.close();
    }
  }, 60_000);

  it("refuses a tunnel without TLS client authentication on a TLS data channel", async () => {
    const echo = await echoSocket(join(work, "dest-notls.sock"), Buffer.from("x"));
    const revoke = tlsServer.tunnels.allow("live-notls", "a", { nbd: echo.path });
    try {
      const o = { address: tlsServer.address, secret, sourceHost: "a", migrationId: "live-notls", channel: "nbd" };
      await expect(openTunnel({ ...o, connectTimeoutMs: 3_000 })).rejects.toThrow();
      expect(echo.received.length).toBe(0);
    } finally {
      revoke();
      echo.server.close();
    }
  }, 30_000);
});
