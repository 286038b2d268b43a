import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { NbdClient, NbdError, NBD_STATE_HOLE } from "./nbd-client.js";

// The pipelined NBD client against a real NBD server (qemu-nbd serving a raw file read-only on a
// unix socket) and against a scripted one that fails mid-reply, stalls or answers out of bounds.

const dir = mkdtempSync(join(tmpdir(), "dwcp-nbd-"));
const SIZE = 8 << 20;
const BLOCK = 64 << 10;
const image = Buffer.alloc(SIZE);
let nbd: ChildProcess | undefined;
const sock = join(dir, "nbd.sock");

/** Connects until the server listens (qemu-nbd creates its socket after it starts). */
async function connectWhenUp(path: string, o: Parameters<typeof NbdClient.connect>[1]): Promise<NbdClient> {
  const until = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(path);
      s.once("connect", () => resolve(true)).once("error", () => resolve(false));
      s.once("connect", () => s.destroy());
    });
    if (up) return NbdClient.connect(path, o);
    if (Date.now() > until) throw new Error(`no NBD server at ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(() => {
  // Data in every other 1 MiB, the rest holes of a sparse file.
  const h = openSync(join(dir, "disk.raw"), "w");
  ftruncateSync(h, SIZE);
  for (let at = 0; at < SIZE; at += 2 << 20) {
    randomBytes(1 << 20).copy(image, at);
    writeSync(h, image, at, 1 << 20, at);
  }
  closeSync(h);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("NbdClient against qemu-nbd", () => {
  beforeAll(() => {
    const file = join(dir, "disk.raw");
    nbd = spawn("qemu-nbd", ["--read-only", "--persistent", "-f", "raw", "-x", "disk", "-k", sock, file], {
      stdio: "ignore",
    });
  });
  afterAll(() => {
    nbd?.kill("SIGKILL");
  });

  it("keeps many reads in flight and returns the file's bytes", async () => {
    const c = await connectWhenUp(sock, { exportName: "disk", maxInflight: 8 });
    try {
      expect(c.size).toBe(SIZE);
      const offsets = Array.from({ length: SIZE / BLOCK }, (_, k) => k * BLOCK).reverse();
      const got = await Promise.all(offsets.map((at) => c.read(at, Buffer.allocUnsafe(BLOCK))));
      for (const [k, at] of offsets.entries()) expect(got[k]!.equals(image.subarray(at, at + BLOCK))).toBe(true);
      expect(c.peakInflight).toBe(8);
      // A read across data and a hole, larger than a socket read.
      const big = await c.read(BLOCK, Buffer.allocUnsafe(3 << 20));
      expect(big.equals(image.subarray(BLOCK, BLOCK + (3 << 20)))).toBe(true);
    } finally {
      await c.close();
    }
  });

  it("describes the whole export's allocation in one block status and refuses reads past its end", async () => {
    const c = await connectWhenUp(sock, { exportName: "disk", metaContext: "base:allocation" });
    try {
      const extents = await c.extents();
      expect(extents[0]!.offset).toBe(0);
      expect(extents.reduce((n, e) => n + e.length, 0)).toBe(SIZE);
      const data = extents.filter((e) => (e.flags & NBD_STATE_HOLE) === 0);
      expect(data.reduce((n, e) => n + e.length, 0)).toBe(SIZE / 2);
      await expect(c.read(SIZE - BLOCK, Buffer.allocUnsafe(2 * BLOCK))).rejects.toThrow(NbdError);
    } finally {
      await c.close();
    }
  });
});

/** A scripted NBD server: the handshake, then `onRequest` for each request. */
function scripted(
  path: string,
  onRequest: (s: Socket, r: { cookie: Buffer; offset: number; length: number }) => void,
): Promise<Server> {
  const server = createServer((s) => {
    let buf = Buffer.alloc(0);
    let phase: "flags" | "options" | "requests" = "flags";
    const header = (opt: number, type: number, data: Buffer): Buffer => {
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(0x3e889045565a9n, 0);
      h.writeUInt32BE(opt, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(data.length, 16);
      return Buffer.concat([h, data]);
    };
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (phase === "flags") {
          if (buf.length < 4) return;
          buf = buf.subarray(4);
          phase = "options";
        } else if (phase === "options") {
          if (buf.length < 16 || buf.length < 16 + buf.readUInt32BE(12)) return;
          const opt = buf.readUInt32BE(8);
          buf = buf.subarray(16 + buf.readUInt32BE(12));
          if (opt === 7) {
            const info = Buffer.alloc(12);
            info.writeBigUInt64BE(BigInt(SIZE), 2);
            s.write(Buffer.concat([header(opt, 3, info), header(opt, 1, Buffer.alloc(0))]));
            phase = "requests";
          } else s.write(header(opt, 1, Buffer.alloc(0)));
        } else {
          if (buf.length < 28) return;
          const r = {
            cookie: Buffer.from(buf.subarray(8, 16)),
            offset: Number(buf.readBigUInt64BE(16)),
            length: buf.readUInt32BE(24),
          };
          buf = buf.subarray(28);
          onRequest(s, r);
        }
      }
    });
    s.on("error", () => undefined);
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(0x4e42444d41474943n, 0);
    hello.writeBigUInt64BE(0x49484156454f5054n, 8);
    hello.writeUInt16BE(3, 16);
    s.write(hello);
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

/** A structured reply chunk. */
function chunk(cookie: Buffer, type: number, payload: Buffer, done: boolean): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(0x668e33ef, 0);
  h.writeUInt16BE(done ? 1 : 0, 4);
  h.writeUInt16BE(type, 6);
  cookie.copy(h, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

const dataChunk = (cookie: Buffer, offset: number, data: Buffer, done: boolean): Buffer => {
  const p = Buffer.alloc(8 + data.length);
  p.writeBigUInt64BE(BigInt(offset), 0);
  data.copy(p, 8);
  return chunk(cookie, 1, p, done);
};

describe("NbdClient against a failing server", () => {
  let server: Server | undefined;
  let n = 0;
  const path = (): string => join(dir, `fake-${++n}.sock`);
  afterEach(async () => {
    await new Promise((r) => server?.close(r));
  });

  it("fails every read in flight, not hangs, when the server goes away mid-reply", async () => {
    const p = path();
    let seen = 0;
    server = await scripted(p, (s, r) => {
      if (++seen < 4) return; // three reads wait; the fourth gets half an answer, then the server is gone
      s.write(dataChunk(r.cookie, r.offset, Buffer.alloc(r.length / 2), false).subarray(0, 20 + r.length / 4));
      s.destroy();
    });
    const c = await NbdClient.connect(p, { exportName: "x" });
    const reads = [0, 1, 2, 3].map((k) => c.read(k * BLOCK, Buffer.allocUnsafe(BLOCK)));
    for (const r of reads) await expect(r).rejects.toThrow(NbdError);
    await expect(c.read(0, Buffer.allocUnsafe(BLOCK))).rejects.toThrow(NbdError);
    await c.close();
  });

  it("gives up a request the server never answers", async () => {
    const p = path();
    server = await scripted(p, () => undefined);
    const c = await NbdClient.connect(p, { exportName: "x", requestTimeoutMs: 200 });
    await expect(c.read(0, Buffer.allocUnsafe(BLOCK))).rejects.toThrow(/no NBD reply within 200 ms/);
    await c.close();
  });

  it("refuses a chunk outside its request, and one that leaves part of it unwritten", async () => {
    const p = path();
    let seen = 0;
    server = await scripted(p, (s, r) => {
      if (++seen === 1) s.write(dataChunk(r.cookie, r.offset + 1, Buffer.alloc(r.length), true));
      else s.write(dataChunk(r.cookie, r.offset, Buffer.alloc(r.length / 2), true));
    });
    const a = await NbdClient.connect(p, { exportName: "x" });
    await expect(a.read(0, Buffer.allocUnsafe(BLOCK))).rejects.toThrow(/outside the request/);
    await a.close();
    const b = await NbdClient.connect(p, { exportName: "x" });
    await expect(b.read(0, Buffer.allocUnsafe(BLOCK))).rejects.toThrow(/returned 32768 of 65536 bytes/);
    await b.close();
  });
});
