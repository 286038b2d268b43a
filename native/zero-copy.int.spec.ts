// Zero-copy syscalls against real files in a temp dir and a real loopback TCP socket, and the
// DWCP_NATIVE=off fallback checked in a child process (the loader caches per process).
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm, writeFile, type FileHandle } from "node:fs/promises";
import { createServer, connect, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { BadFileDescriptorError, fingerprints, nativeUnavailableReason, socketFd, zeroCopy } from "./index.js";
import { openDirect, writeAll } from "#common/fs.js";
import { evict, residentBytes } from "../test/support/page-cache.js";

const MiB = 1 << 20;
let dir = "";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "dwcp-zero-copy-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

if (!zeroCopy.available) console.warn(`native module absent (${nativeUnavailableReason}): zero-copy tests are skipped`);

/** The fd of a connected TCP socket; sendfile writes to it directly. */
function fdOf(s: Socket): number {
  const fd = socketFd(s);
  if (fd === undefined) throw new Error("socket has no fd");
  return fd;
}

/** A loopback server that collects everything one client sends until it closes. */
async function receiver(): Promise<{ port: number; received: Promise<Buffer>; close: () => void }> {
  const server = createServer();
  const received = new Promise<Buffer>((resolve, reject) => {
    server.once("connection", (sock) => {
      const parts: Buffer[] = [];
      sock.on("data", (d: Buffer) => parts.push(d));
      sock.on("end", () => resolve(Buffer.concat(parts)));
      sock.on("error", reject);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as AddressInfo).port, received, close: () => server.close() };
}

/**
 * Runs `f` with a loopback connection whose accepted end is paused (libuv never reads it: recv
 * owns it), that end's fd and a cancel flag; closes everything after.
 */
async function withPausedPair(
  f: (c: { client: Socket; fd: number; cancel: Int32Array }) => Promise<void>,
): Promise<void> {
  const server = createServer({ pauseOnConnect: true });
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = connect((server.address() as AddressInfo).port, "127.0.0.1");
  const sock = await accepted;
  try {
    await f({ client, fd: fdOf(sock), cancel: new Int32Array(new SharedArrayBuffer(4)) });
  } finally {
    sock.destroy();
    client.destroy();
    server.close();
  }
}

async function withFile<T>(name: string, flags: string, f: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(join(dir, name), flags);
  try {
    return await f(fh);
  } finally {
    await fh.close();
  }
}

describe.skipIf(!zeroCopy.available)("zero-copy with the native module", () => {
  it("sendfile streams a file to a loopback TCP socket, whole and from an offset", async () => {
    const data = randomBytes(24 * MiB + 13); // larger than the socket buffer: exercises EAGAIN + poll
    await writeFile(join(dir, "src.bin"), data);
    for (const [offset, length] of [
      [0, data.length],
      [4097, 3 * MiB + 5],
    ] as const) {
      const rx = await receiver();
      const client = connect(rx.port, "127.0.0.1");
      await new Promise<void>((resolve) => client.once("connect", resolve));
      const sent = await withFile("src.bin", "r", (fh) => zeroCopy.sendfile(fdOf(client), fh.fd, offset, length));
      client.end();
      const got = await rx.received;
      rx.close();
      expect(sent).toBe(length);
      expect(got.equals(data.subarray(offset, offset + length))).toBe(true);
    }
  });

  it("sendfile reports fewer bytes when the input ends first, and maps EBADF", async () => {
    await writeFile(join(dir, "short.bin"), randomBytes(1000));
    await withFile("short.bin", "r", async (src) => {
      await withFile("short-out.bin", "w", async (dst) => {
        expect(await zeroCopy.sendfile(dst.fd, src.fd, 0, 5000)).toBe(1000);
      });
      await expect(zeroCopy.sendfile(987_654, src.fd, 0, 10)).rejects.toBeInstanceOf(BadFileDescriptorError);
    });
  });

  it("copyFileRange copies between real files at offsets", async () => {
    const data = randomBytes(5 * MiB + 7);
    await writeFile(join(dir, "a.bin"), data);
    const copied = await withFile("a.bin", "r", (src) =>
      withFile("b.bin", "w+", (dst) => zeroCopy.copyFileRange(src.fd, 123, dst.fd, 4096, data.length - 123)),
    );
    expect(copied).toBe(data.length - 123);
    const out = await readFile(join(dir, "b.bin"));
    expect(out.subarray(0, 4096).every((b) => b === 0)).toBe(true);
    expect(out.subarray(4096).equals(data.subarray(123))).toBe(true);
  });

  it("seekData/seekHole walk a sparse file and punchHole makes a hole", async () => {
    const size = 16 * MiB;
    await withFile("sparse.bin", "w+", async (fh) => {
      await fh.write(randomBytes(64 * 1024), 0, 64 * 1024, 0);
      await fh.write(randomBytes(64 * 1024), 0, 64 * 1024, 8 * MiB);
      await fh.truncate(size);
      await fh.sync();
      if (zeroCopy.seekHole(fh.fd, 0) === size) {
        console.warn("file system reports no holes: sparse-file assertions skipped");
        return;
      }
      expect(zeroCopy.seekData(fh.fd, 0)).toBe(0);
      expect(zeroCopy.seekHole(fh.fd, 0)).toBe(64 * 1024);
      expect(zeroCopy.seekData(fh.fd, 64 * 1024)).toBe(8 * MiB);
      expect(zeroCopy.seekHole(fh.fd, 8 * MiB)).toBe(8 * MiB + 64 * 1024);
      expect(zeroCopy.seekData(fh.fd, 8 * MiB + 64 * 1024)).toBe(-1);
      expect(zeroCopy.seekHole(fh.fd, size + 1)).toBe(-1);
      zeroCopy.punchHole(fh.fd, 0, 64 * 1024);
      expect(zeroCopy.seekData(fh.fd, 0)).toBe(8 * MiB);
      const head = Buffer.alloc(64 * 1024, 1);
      await fh.read(head, 0, head.length, 0);
      expect(head.every((b) => b === 0)).toBe(true);
      expect((await fh.stat()).size).toBe(size);
      zeroCopy.fadvise(fh.fd, 0, 0, "dontneed");
    });
  });

  it("recv fills a buffer range from a paused socket, reports EOF short, honours cancel and timeout", async () => {
    const payload = randomBytes(3 * MiB + 5);
    await withPausedPair(async ({ client, fd, cancel }) => {
      // Nothing sent yet: the timeout fires; cancel stops a wait early.
      await expect(zeroCopy.recv(fd, Buffer.alloc(8), 0, 1, 8, 120, cancel)).rejects.toMatchObject({
        sysCode: "ETIMEDOUT",
      });
      const waiting = zeroCopy.recv(fd, Buffer.alloc(8), 0, 1, 8, 10_000, cancel);
      Atomics.store(cancel, 0, 1);
      await expect(waiting).rejects.toMatchObject({ sysCode: "ECANCELED" });
      Atomics.store(cancel, 0, 0);

      client.end(payload);
      const target = Buffer.alloc(payload.length + 200, 0xee);
      expect(await zeroCopy.recv(fd, target, 100, MiB, MiB, 10_000, cancel)).toBe(MiB);
      const want = payload.length - MiB + 100; // more than is left: EOF ends it short
      const rest = await zeroCopy.recv(fd, target, 100 + MiB, want, want, 10_000, cancel);
      expect(rest).toBe(payload.length - MiB);
      expect(target.subarray(100, 100 + payload.length).equals(payload)).toBe(true);
      expect(target.subarray(0, 100).every((b) => b === 0xee)).toBe(true);
      await expect(zeroCopy.recv(fd, target, 0, 10, 5, 1000, cancel)).rejects.toThrow(/does not fit/);
    });
  });

  it("recv with stallMs returns what arrived when the peer goes quiet mid-read, to be continued", async () => {
    const payload = randomBytes(64 * 1024);
    const target = Buffer.alloc(payload.length);
    await withPausedPair(async ({ client, fd, cancel }) => {
      expect(await zeroCopy.recv(fd, target, 0, 1, 8, 10_000, cancel, 20)).toBe(-1);
      await new Promise<void>((resolve) => client.write(payload.subarray(0, 1000), () => resolve()));
      let got = 0;
      while (got < 1000) {
        const n = await zeroCopy.recv(fd, target, got, payload.length - got, payload.length - got, 10_000, cancel, 20);
        expect(n).toBeLessThan(0);
        got += -1 - n;
      }
      expect(got).toBe(1000);
      client.end(payload.subarray(1000));
      const rest = payload.length - got;
      expect(await zeroCopy.recv(fd, target, got, rest, rest, 10_000, cancel, 20)).toBe(rest);
      expect(target.equals(payload)).toBe(true);
    });
  });

  it("alignedBuffer hands out pre-faulted memory on a 4 KiB boundary", () => {
    const b = zeroCopy.alignedBuffer(MiB);
    expect(b.length).toBe(MiB);
    expect(b.every((x) => x === 0)).toBe(true);
  });

  it("readIfCached reads a range only when all of it is in the page cache", async () => {
    // Whether a page is cached is the kernel's call, not the test's: an O_DIRECT write can fall
    // back to the page cache, fadvise(DONTNEED) is advice. So the file's residency is read from
    // fincore(1) (util-linux: mincore or cachestat, an observer independent of the module), and
    // the file is written straight to the disk, then evicted until fincore sees no page of it.
    const data = randomBytes(2 * MiB);
    const path = join(dir, "cached.bin");
    await writeFile(path, "");
    const direct = await openDirect(path);
    if (direct === undefined) await writeFile(path, data);
    else {
      const block = zeroCopy.alignedBuffer(data.length);
      data.copy(block);
      try {
        await writeAll(direct.fh, block, 0);
      } finally {
        await direct.fh.close();
      }
    }
    await withFile("cached.bin", "r", async (fh) => {
      const out = Buffer.alloc(64 * 1024);
      const resident = await evict(fh, path);
      if (resident === 0) {
        // No page cached: nothing is read, and nothing waits for the disk or starts a read of it.
        expect(zeroCopy.readIfCached(fh.fd, out, MiB, out.length), "an uncached range is refused").toBe(false);
        expect(out.equals(Buffer.alloc(out.length)), "nothing was copied").toBe(true);
        expect(residentBytes(path), "the refusal read nothing in").toBe(0);
      } else
        console.warn(
          `readIfCached: ${resident} bytes of the file stay cached after 20 evictions; the refusal is not checked`,
        );
      await fh.read(out, 0, out.length, MiB); // now cached
      out.fill(0);
      expect(zeroCopy.readIfCached(fh.fd, out, MiB, out.length)).toBe(true);
      expect(out.equals(data.subarray(MiB, MiB + out.length))).toBe(true);
      expect(() => zeroCopy.readIfCached(-1, out, 0, 10)).toThrow();
      expect(() => zeroCopy.readIfCached(fh.fd, out, 0, out.length + 1)).toThrow(/do not fit/);
    });
  });

  it("startWriteback accepts a written range and reports a bad fd", async () => {
    await withFile("writeback.bin", "w+", async (fh) => {
      await fh.write(randomBytes(MiB), 0, MiB, 0);
      await zeroCopy.startWriteback(fh.fd, 0, MiB);
    });
    await expect(zeroCopy.startWriteback(987_654, 0, 1)).rejects.toBeInstanceOf(BadFileDescriptorError);
  });

  it("fingerprintFile gives the fingerprints of the bytes pread would return", async () => {
    const data = randomBytes(3 * MiB + 1234);
    data.fill(0, MiB, MiB + 8192); // zero pages fingerprint like any other
    await writeFile(join(dir, "fp.bin"), data);
    await withFile("fp.bin", "r", async (fh) => {
      for (const [off, len] of [
        [0, data.length],
        [4096, MiB],
        [2 * MiB, data.length - 2 * MiB],
        [8192, 100],
        [0, 0],
      ] as const) {
        const into = new BigUint64Array(Math.ceil(len / 4096));
        await zeroCopy.fingerprintFile(fh.fd, off, len, into);
        expect(into, `range ${off}+${len}`).toEqual(fingerprints(data.subarray(off, off + len)));
      }
      await expect(zeroCopy.fingerprintFile(fh.fd, 100, 4096, new BigUint64Array(1))).rejects.toThrow(
        /not a multiple of 4096/,
      );
      await expect(zeroCopy.fingerprintFile(fh.fd, 0, 8192, new BigUint64Array(1))).rejects.toThrow(
        /holds 1 fingerprints/,
      );
      await expect(zeroCopy.fingerprintFile(fh.fd, 2 * MiB, 2 * MiB, new BigUint64Array(512))).rejects.toMatchObject({
        sysCode: "ENXIO",
      });
    });
  });

  it("fingerprintFile survives the file being truncated under it (SIGBUS becomes ENXIO)", async () => {
    const size = 64 * MiB;
    await writeFile(join(dir, "shrinking.bin"), randomBytes(size));
    const outcomes = { ok: 0, shrank: 0, short: 0 };
    for (let k = 0; k < 12; k++) {
      await withFile("shrinking.bin", "r+", async (fh) => {
        await fh.truncate(size);
        const into = new BigUint64Array(size / 4096);
        const read = zeroCopy.fingerprintFile(fh.fd, 0, size, into).then(
          () => undefined,
          (err: unknown) => err,
        );
        await fh.truncate(k % 2 === 0 ? 0 : size / 2); // while the pool thread maps and reads
        const err = await read;
        if (err === undefined) outcomes.ok++;
        else {
          expect(err).toMatchObject({ sysCode: "ENXIO" });
          if (/shrank while it was read/.test((err as Error).message)) outcomes.shrank++;
          else outcomes.short++;
        }
      });
    }
    // The process is alive; which of the three each round gave depends on timing.
    expect(outcomes.ok + outcomes.shrank + outcomes.short).toBe(12);
    expect(outcomes.shrank + outcomes.short).toBeGreaterThan(0);
  });
});

describe("DWCP_NATIVE=off", () => {
  it("reports the TypeScript fallback and no zero-copy (in a child process)", () => {
    const index = fileURLToPath(new URL("./index.ts", import.meta.url));
    const tsx = fileURLToPath(new URL("../node_modules/.bin/tsx", import.meta.url));
    const report =
      "{ available: m.zeroCopy.available, cached: m.zeroCopy.readIfCached(0, Buffer.alloc(1), 0, 1), " +
      'caps: m.capabilities(), crc: m.crc32c(Buffer.from("123456789")) }';
    const script = `import(${JSON.stringify(index)}).then((m) => console.log(JSON.stringify(${report})))`;
    const r = spawnSync(tsx, ["--eval", script], {
      env: { ...process.env, DWCP_NATIVE: "off" },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/native module not loaded/); // off is a choice: no warning
    const out = JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}") as {
      available: boolean;
      cached: boolean;
      caps: Record<string, string>;
      crc: number;
    };
    expect(out.available).toBe(false);
    expect(out.cached).toBe(false);
    expect(Object.values(out.caps).every((v) => v === "ts-fallback")).toBe(true);
    expect(out.crc).toBe(0xe3069283);
  });
});
