// Tunnels over the data channel (mTLS with provisioned certificates, and plaintext): raw bytes
// between a unix socket at the source and one at the destination, byte-identical both ways,
// each direction's end passed on as a half-close; unauthenticated and unexpected tunnels refused.
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
      } finally {
        revoke();
        await listener.close();
        echo.server.close();
      }
    }, 60_000);
  }

  it("refuses a tunnel of an unexpected migration, source host or channel", async () => {
    const echo = await echoSocket(join(work, "dest-refuse.sock"), Buffer.from("x"));
    const revoke = tlsServer.tunnels.allow("live-expected", "a", { nbd: echo.path });
    const base: TunnelOptions = {
      address: tlsServer.address,
      secret,
      sourceHost: "a",
      migrationId: "live-expected",
      channel: "nbd",
      tls: { tls: senderTls, destHost: "b" },
    };
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
      ok.destroy();
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
