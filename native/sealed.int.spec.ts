// Sealed records (native AES-128-GCM): the format checked against node:crypto, tag and counter
// refusals, and sealSend/recvOpen over a real loopback TCP connection.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { createServer, connect, type AddressInfo, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";

import {
  SEALED_HEADER_BYTES,
  SealedRecordForgedError,
  SealedRecordInvalidError,
  sealed,
  socketFd,
  type SealKeys,
} from "./index.js";

const keys = (): SealKeys => ({ key: randomBytes(16), iv: randomBytes(12) });

function nonceOf(k: SealKeys, counter: bigint): Buffer {
  const n = Buffer.from(k.iv);
  const c = Buffer.alloc(8);
  c.writeBigUInt64BE(counter);
  for (let i = 0; i < 8; i++) n[4 + i] = (n[4 + i] as number) ^ (c[i] as number);
  return n;
}

const cancel = (): Int32Array => new Int32Array(new SharedArrayBuffer(4));

describe.skipIf(!sealed.available)("sealed records", () => {
  it("seals what node:crypto opens (AAD = header[0..16], tag = header[16..32]) and opens what it seals", async () => {
    const k = keys();
    const plain = randomBytes(1 << 20);
    const data = Buffer.from(plain);
    const header = Buffer.alloc(SEALED_HEADER_BYTES);
    await sealed.seal(k, 7n, header, data);
    expect(header[0]).toBe(0xd5);
    expect(header.readUInt32BE(4)).toBe(plain.length);
    expect(header.readBigUInt64BE(8)).toBe(7n);
    expect(data.equals(plain)).toBe(false);
    const d = createDecipheriv("aes-128-gcm", k.key, nonceOf(k, 7n));
    d.setAAD(header.subarray(0, 16));
    d.setAuthTag(header.subarray(16, 32));
    expect(Buffer.concat([d.update(data), d.final()]).equals(plain)).toBe(true);

    // And the other way: node:crypto seals, native opens in place.
    const h2 = Buffer.from(header);
    h2.writeBigUInt64BE(8n, 8);
    const c = createCipheriv("aes-128-gcm", k.key, nonceOf(k, 8n));
    c.setAAD(h2.subarray(0, 16));
    const ct = Buffer.concat([c.update(plain), c.final()]);
    c.getAuthTag().copy(h2, 16);
    await sealed.open(k, 8n, h2, ct);
    expect(ct.equals(plain)).toBe(true);
  });

  it("refuses a flipped ciphertext, header or tag byte (SealedRecordForgedError) and zeroes the record", async () => {
    const k = keys();
    for (const where of ["data", "header", "tag"] as const) {
      const data = randomBytes(4096);
      const header = Buffer.alloc(SEALED_HEADER_BYTES);
      await sealed.seal(k, 1n, header, data);
      if (where === "data") data[100] = (data[100] as number) ^ 1;
      if (where === "header") header[5] = (header[5] as number) ^ 0x80; // the length field: AAD
      if (where === "tag") header[20] = (header[20] as number) ^ 1;
      const err = await sealed.open(k, 1n, header, data).catch((e: unknown) => e);
      expect(err, where).toBeInstanceOf(SealedRecordForgedError);
      expect(data.every((b) => b === 0)).toBe(true);
    }
  });

  it("refuses a record under another counter (replayed or reordered)", async () => {
    const k = keys();
    const data = randomBytes(64);
    const header = Buffer.alloc(SEALED_HEADER_BYTES);
    await sealed.seal(k, 3n, header, data);
    const err = await sealed.open(k, 4n, header, data).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SealedRecordInvalidError);
    expect((err as SealedRecordInvalidError).detail).toBe("SEALED_ORDER");
  });
});

describe.skipIf(!sealed.available)("sealSend / recvOpen over TCP", () => {
  const sockets: Socket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.destroy();
  });

  async function pair(): Promise<{ a: Socket; b: Socket }> {
    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const accepted = new Promise<Socket>((r) => server.once("connection", r));
    const a = connect((server.address() as AddressInfo).port, "127.0.0.1");
    await new Promise<void>((r) => a.once("connect", r));
    const b = await accepted;
    server.close();
    sockets.push(a, b);
    return { a, b };
  }

  it("delivers records in order into the reader's buffers; EOF after the last is -1", async () => {
    const { a, b } = await pair();
    const k = keys();
    const parts = [randomBytes(100), randomBytes(3 << 20), randomBytes(1)];
    const copies = parts.map((p) => Buffer.from(p));
    const sent = sealed.sealSend(socketFd(a) as number, k, 0n, copies, 10_000, cancel());
    const header = Buffer.alloc(SEALED_HEADER_BYTES);
    const into = Buffer.alloc(4 << 20);
    for (const [i, p] of parts.entries()) {
      const n = await sealed.recvOpen(socketFd(b) as number, k, BigInt(i), header, into, 5, p.length, 10_000, cancel());
      expect(n).toBe(p.length);
      expect(into.subarray(5, 5 + n).equals(p)).toBe(true);
    }
    expect(await sent).toBe(parts.reduce((s, p) => s + p.length + SEALED_HEADER_BYTES, 0));
    a.end();
    expect(await sealed.recvOpen(socketFd(b) as number, k, 3n, header, into, 0, 10, 10_000, cancel())).toBe(-1);
  });

  it("with resume, gives its thread back when the peer goes quiet inside a record, and continues it", async () => {
    const { a, b } = await pair();
    const k = keys();
    const plain = randomBytes(256 * 1024);
    const body = Buffer.from(plain);
    const sealedHeader = Buffer.alloc(SEALED_HEADER_BYTES);
    await sealed.seal(k, 0n, sealedHeader, body);
    const write = (bytes: Uint8Array): Promise<void> => new Promise((r) => a.write(bytes, () => r()));
    const fd = socketFd(b) as number;
    const header = Buffer.alloc(SEALED_HEADER_BYTES);
    const into = Buffer.alloc(plain.length);
    const resume = { progress: new Int32Array(2), stallMs: 30 };
    const read = (): Promise<number> =>
      sealed.recvOpen(fd, k, 0n, header, into, 0, into.length, 10_000, cancel(), resume);
    /** Reads until the peer's bytes so far are in, each read stalling with the record unfinished. */
    const readAll = async (header: number, body: number): Promise<void> => {
      while (resume.progress[0] !== header || resume.progress[1] !== body) expect(await read()).toBe(-2);
    };
    await write(sealedHeader.subarray(0, 10));
    await readAll(10, 0);
    await write(Buffer.concat([sealedHeader.subarray(10), body.subarray(0, 1000)]));
    await readAll(SEALED_HEADER_BYTES, 1000);
    await write(body.subarray(1000));
    expect(await read()).toBe(plain.length);
    expect(into.equals(plain)).toBe(true);
    expect([...resume.progress]).toEqual([0, 0]);
  });

  it("refuses a record longer than the reader's capacity before reading its body", async () => {
    const { a, b } = await pair();
    const k = keys();
    await sealed.sealSend(socketFd(a) as number, k, 0n, [randomBytes(200)], 10_000, cancel());
    const header = Buffer.alloc(SEALED_HEADER_BYTES);
    const err = await sealed
      .recvOpen(socketFd(b) as number, k, 0n, header, Buffer.alloc(100), 0, 100, 10_000, cancel())
      .catch((e: unknown) => e);
    expect((err as SealedRecordInvalidError).detail).toBe("SEALED_TOO_LONG");
  });
  /** Everything that arrives on `s` until it ends. */
  function collect(s: Socket): Promise<Buffer> {
    const parts: Buffer[] = [];
    s.on("data", (d: Buffer) => parts.push(d));
    s.resume();
    return new Promise((resolve) => s.once("end", () => resolve(Buffer.concat(parts))));
  }

  /** Records 0, 1, ... sealed from `datas`; the last one empty (the end) when `end` is set. */
  async function records(k: SealKeys, datas: Buffer[], end: boolean): Promise<Buffer> {
    const out: Buffer[] = [];
    for (const [i, d] of [...datas, ...(end ? [Buffer.alloc(0)] : [])].entries()) {
      const header = Buffer.alloc(SEALED_HEADER_BYTES);
      const body = Buffer.from(d);
      await sealed.seal(k, BigInt(i), header, body);
      out.push(header, body);
    }
    return Buffer.concat(out);
  }

  it("pump: a stream sealed at one end is opened at the other, byte for byte, to its authenticated end", async () => {
    const k = keys();
    const [local, link, out] = [await pair(), await pair(), await pair()];
    const plain = randomBytes(5 * 1024 * 1024 + 7);
    const got = collect(out.b);
    const sealing = sealed.pump(socketFd(local.b) as number, socketFd(link.a) as number, k, false, 10_000, cancel());
    const opening = sealed.pump(socketFd(link.b) as number, socketFd(out.a) as number, k, true, 10_000, cancel());
    for (let at = 0; at < plain.length; ) {
      const n = Math.min(plain.length - at, 1 + ((at * 7919) % 700_000));
      if (!local.a.write(plain.subarray(at, at + n))) await new Promise((r) => local.a.once("drain", r));
      at += n;
    }
    local.a.end();
    expect(await sealing).toBe(plain.length);
    expect(await opening).toBe(plain.length);
    out.a.end();
    expect((await got).equals(plain)).toBe(true);
  });

  it("pump: a forged record stops the stream with none of its bytes delivered", async () => {
    const k = keys();
    const [link, out] = [await pair(), await pair()];
    const good = randomBytes(1000);
    const wire = await records(k, [good, randomBytes(5000)], true);
    const at = 2 * SEALED_HEADER_BYTES + good.length + 100; // inside the second record's ciphertext
    wire[at] = (wire[at] as number) ^ 1;
    const got = collect(out.b);
    const opening = sealed.pump(socketFd(link.b) as number, socketFd(out.a) as number, k, true, 10_000, cancel());
    link.a.write(wire);
    await expect(opening).rejects.toThrow(SealedRecordForgedError);
    out.a.end();
    expect((await got).equals(good)).toBe(true);
  });

  it("pump: a link that closes before the end record, or a record out of order, is refused", async () => {
    const k = keys();
    for (const [wire, detail] of [
      [await records(k, [randomBytes(300)], false), "SEALED_TRUNCATED"],
      [(await records(k, [randomBytes(10), randomBytes(10)], true)).subarray(SEALED_HEADER_BYTES + 10), "SEALED_ORDER"],
    ] as const) {
      const [link, out] = [await pair(), await pair()];
      const opening = sealed.pump(socketFd(link.b) as number, socketFd(out.a) as number, k, true, 10_000, cancel());
      link.a.end(wire);
      const err = await opening.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SealedRecordInvalidError);
      expect((err as SealedRecordInvalidError).detail).toBe(detail);
    }
  });

  it("pump: a stream quiet for longer than the timeout goes on, until it is cancelled", async () => {
    const [local, link] = [await pair(), await pair()];
    const stop = cancel();
    const sealing = sealed.pump(socketFd(local.b) as number, socketFd(link.a) as number, keys(), false, 50, stop);
    const arrived = (bytes: number): Promise<void> =>
      new Promise((resolve) => {
        let got = 0;
        const on = (d: Buffer): void => {
          got += d.length;
          if (got < bytes) return;
          link.b.off("data", on);
          resolve();
        };
        link.b.on("data", on);
        link.b.resume();
      });
    local.a.write(randomBytes(10));
    await arrived(SEALED_HEADER_BYTES + 10);
    // The quiet period is what is tested: four times the pump's timeout with nothing to carry.
    await new Promise((r) => setTimeout(r, 200));
    local.a.write(randomBytes(20));
    await arrived(SEALED_HEADER_BYTES + 20);
    Atomics.store(stop, 0, 1);
    await expect(sealing).rejects.toMatchObject({ sysCode: "ECANCELED" });
  });
});
