import { randomBytes } from "node:crypto";
import { access, mkdir, readdir, rm, symlink } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAddress } from "../../domain/data-channel/address.js";
import { helloMac, helloNonce, migrationToken } from "../../domain/data-channel/auth.js";
import { CLIENT_PREAUTH, FrameDecoder } from "../../domain/data-channel/decoder.js";
import { encodeControl, HEADER_BYTES, NONCE_BYTES, writeHeader } from "../../domain/data-channel/frames.js";
import { AuthFailedError, DestinationUnreachableError, PathOutsideRootError } from "../../errors.js";
import { sendBatch, type SendBatchOptions } from "./client.js";
import { SocketFrameReader } from "./frame-reader.js";
import { startDataServer, type DataServer } from "./server.js";
import { makeSparseFile, MiB, silentLog, tempDir } from "#test/support/data-channel.js";

const secret = randomBytes(32);
let work: string;
let root: string;
let outside: string;
let source: string;
let server: DataServer;

beforeAll(async () => {
  work = await tempDir("dcsec");
  root = join(work, "root");
  outside = join(work, "outside");
  source = join(work, "src.img");
  await Promise.all([mkdir(root), mkdir(outside)]);
  await symlink(outside, join(root, "escape"));
  await makeSparseFile(source, 2 * MiB, [{ offset: 5, length: 70_000 }]);
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

function batch(over: Partial<SendBatchOptions> = {}): SendBatchOptions {
  return {
    address: server.address,
    secret,
    sourceHost: "src",
    migrationId: "mig-sec",
    batch: 0,
    attempt: 0,
    sourcePath: source,
    destDir: "vm",
    destName: "disk.img",
    volumeSizeBytes: 2 * MiB,
    chunkSizeBytes: MiB,
    firstChunk: 0,
    chunkCount: 2,
    log: silentLog,
    ...over,
  };
}

const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

async function rawConnection(): Promise<{ socket: Socket; closed: Promise<number>; received: () => number }> {
  const target = parseAddress(server.address);
  if (target === undefined) throw new Error("bad address");
  const socket = connect(target);
  let bytes = 0;
  socket.on("data", (d: Buffer) => (bytes += d.length));
  socket.on("error", () => undefined);
  const openedAt = performance.now();
  const closed = new Promise<number>((resolve) => socket.on("close", () => resolve(performance.now() - openedAt)));
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  return { socket, closed, received: () => bytes };
}

describe("data channel authentication and limits", () => {
  it("refuses a client with the wrong secret and creates nothing", async () => {
    const err: unknown = await sendBatch(batch({ secret: randomBytes(32), destDir: "never" })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthFailedError);
    expect((err as AuthFailedError).retryable).toBe(false);
    expect(await exists(join(root, "never"))).toBe(false);
  });

  it("refuses '..' and symlink escapes and a destName that is not a basename", async () => {
    for (const over of [
      { destDir: "../outside" },
      { destDir: "escape/vm" },
      { destDir: outside },
      { destName: "../disk.img" },
    ]) {
      const err: unknown = await sendBatch(batch(over)).catch((e: unknown) => e);
      expect(err, JSON.stringify(over)).toBeInstanceOf(PathOutsideRootError);
    }
    expect(await readdir(outside)).toEqual([]);
    expect(await readdir(root)).toEqual(["escape"]);
  });

  it("refuses a .part that is a symlink planted to lead out of the root", async () => {
    await mkdir(join(root, "planted"));
    await symlink(join(outside, "victim"), join(root, "planted", "disk.img.part"));
    const err: unknown = await sendBatch(batch({ destDir: "planted" })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PathOutsideRootError);
    expect(await readdir(outside)).toEqual([]);
    await rm(join(root, "planted"), { recursive: true });
  });

  it("closes a connection that sends nothing within 5 s", async () => {
    const { closed, received } = await rawConnection();
    const ms = await closed;
    expect(received()).toBe(HEADER_BYTES + NONCE_BYTES); // the CHALLENGE, nothing else
    expect(ms).toBeGreaterThan(4500);
    expect(ms).toBeLessThan(8000);
  });

  it("closes a pre-auth connection whose header claims 4 GiB without allocating it", async () => {
    const before = process.memoryUsage();
    const closings: Promise<number>[] = [];
    for (let i = 0; i < 8; i++) {
      const { socket, closed } = await rawConnection();
      const header = new Uint8Array(HEADER_BYTES);
      writeHeader(header, "HELLO", { payloadLength: 0xffffffff });
      socket.write(header);
      socket.write(randomBytes(64 * 1024)); // the start of the "payload"
      closings.push(closed);
    }
    for (const ms of await Promise.all(closings)) expect(ms).toBeLessThan(2000);
    const after = process.memoryUsage();
    expect(after.rss - before.rss).toBeLessThan(64 * MiB);
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(16 * MiB);
  });

  it("closes a connection that speaks something else", async () => {
    const { socket, closed } = await rawConnection();
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(await closed).toBeLessThan(2000);
  });

  it("lets an authenticated link re-authenticate for another migration only with the next derived nonce", async () => {
    const { socket, closed } = await rawConnection();
    const reader = new SocketFrameReader(socket, new FrameDecoder(CLIENT_PREAUTH));
    const next = async (): Promise<string> => {
      const step = await reader.next();
      return step.kind === "frame" ? step.frame.kind : step.kind;
    };
    const challenge = await reader.next();
    if (challenge.kind !== "frame" || challenge.frame.kind !== "CHALLENGE") throw new Error("no CHALLENGE");
    const nonce = challenge.frame.nonce;
    const hello = (id: string, n: number, key = secret): Uint8Array =>
      encodeControl({
        kind: "HELLO",
        migrationId: id,
        sourceHost: "src",
        mac: helloMac(migrationToken(key, id), helloNonce(nonce, n), id, "src"),
      });
    socket.write(hello("mig-one", 0));
    expect(await next()).toBe("AUTH_OK");
    // The next HELLO answers the next derived nonce: accepted, for another migration.
    socket.write(hello("mig-two", 1));
    expect(await next()).toBe("AUTH_OK");
    // The same HELLO again (a replay on this link) answers a nonce already used: refused, link closed.
    socket.write(hello("mig-two", 1));
    expect(await next()).toBe("AUTH_FAIL");
    expect(await closed).toBeGreaterThan(0);
  });

  it("refuses a re-authentication with the wrong secret and closes the link", async () => {
    const { socket, closed } = await rawConnection();
    const reader = new SocketFrameReader(socket, new FrameDecoder(CLIENT_PREAUTH));
    const challenge = await reader.next();
    if (challenge.kind !== "frame" || challenge.frame.kind !== "CHALLENGE") throw new Error("no CHALLENGE");
    const nonce = challenge.frame.nonce;
    const mac = (key: Uint8Array, id: string, n: number): Buffer =>
      helloMac(migrationToken(key, id), helloNonce(nonce, n), id, "src");
    socket.write(
      encodeControl({ kind: "HELLO", migrationId: "mig-a", sourceHost: "src", mac: mac(secret, "mig-a", 0) }),
    );
    const ok = await reader.next();
    expect(ok.kind === "frame" && ok.frame.kind).toBe("AUTH_OK");
    const forged = mac(randomBytes(32), "mig-b", 1);
    socket.write(encodeControl({ kind: "HELLO", migrationId: "mig-b", sourceHost: "src", mac: forged }));
    const refused = await reader.next();
    expect(refused.kind === "frame" && refused.frame.kind).toBe("AUTH_FAIL");
    expect(await closed).toBeGreaterThan(0);
    expect(await exists(join(root, "mig-b"))).toBe(false);
  });

  it("reports an unreachable destination as retryable", async () => {
    const err: unknown = await sendBatch(batch({ address: "127.0.0.1:1", connectTimeoutMs: 2000 })).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DestinationUnreachableError);
    expect((err as DestinationUnreachableError).retryable).toBe(true);
  });

  it("still serves honest clients afterwards", async () => {
    const r = await sendBatch(batch());
    expect(r.chunks).toHaveLength(2);
    expect(await exists(join(root, "vm", "disk.img.part"))).toBe(true);
  });
});
