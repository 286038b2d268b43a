// The seed's VM for bench:bigvm and its scaled-down test: a sparse disk image with data extents of
// 64 KiB-64 MiB spread over it, a dense memory image with about 40% zero pages, and a comparison
// of two sparse files that reads only the ranges where either holds data.
import { execFileSync } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { DIRECT_IO_ALIGN, zeroCopy } from "#native/index.js";
import { prng } from "../../cli/image.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const PAGE = 4 * KiB;
/** File system block: extents start and end on it, as a guest's file system writes them. */
const BLOCK = 4 * KiB;
const WRITE_BYTES = 8 * MiB;

/**
 * A seeded stream of incompressible bytes: AES-128-CTR over zeros, keyed from the seed (AES-NI
 * makes it several GB/s, where a JavaScript PRNG loop manages a few hundred MB/s).
 */
export function seededBytes(seed: number): (out: Buffer) => void {
  const key = createHash("sha256").update(`dwcp-bigvm-${seed}`).digest();
  const cipher = createCipheriv("aes-128-ctr", key.subarray(0, 16), key.subarray(16, 32));
  const zeros = Buffer.alloc(WRITE_BYTES);
  return (out) => {
    for (let at = 0; at < out.length; at += zeros.length) {
      const n = Math.min(zeros.length, out.length - at);
      cipher.update(zeros.subarray(0, n)).copy(out, at);
    }
  };
}

/**
 * 4 MiB of text: syslog-like lines with varying times, PIDs, units and numbers (compressible, as a
 * guest's logs and configuration are, but no one repeated line). Extents copy from it at varying
 * offsets.
 */
function textPool(next: () => number): Buffer {
  const units = ["systemd", "kernel", "sshd", "cron", "nginx", "postgres", "dockerd", "containerd", "NetworkManager"];
  const words = [
    "Started",
    "Stopped",
    "Reloading",
    "Accepted publickey for",
    "connection from",
    "checkpoint",
    "GET",
    "POST",
  ];
  const words2 = ["/var/lib/postgresql/15/main", "/usr/lib/x86_64-linux-gnu/libc.so.6", "session opened", "200 OK"];
  const parts: string[] = [];
  let bytes = 0;
  for (let i = 0; bytes < 4 * MiB; i++) {
    const t = i * 37 + (next() % 1000);
    const line =
      `Nov ${1 + (next() % 28)} ${String(t % 24).padStart(2, "0")}:${String((t >> 3) % 60).padStart(2, "0")}:` +
      `${String(t % 60).padStart(2, "0")} vm ${units[next() % units.length]}[${next() % 65536}]: ` +
      `${words[next() % words.length]} ${words2[next() % words2.length]} id=${next().toString(16)} n=${i}\n`;
    parts.push(line);
    bytes += line.length;
  }
  return Buffer.from(parts.join("")).subarray(0, 4 * MiB);
}

/** Fills `out` with a text/binary mix in pieces of 64 KiB-1 MiB: random, text, and binary with zero runs. */
function fillMixed(out: Buffer, next: () => number, random: (b: Buffer) => void, text: Buffer): void {
  for (let at = 0; at < out.length; ) {
    const n = Math.min(out.length - at, 64 * KiB * (1 + (next() % 16)));
    const piece = out.subarray(at, at + n);
    const kind = next() % 10;
    if (kind < 5) random(piece);
    else if (kind < 8) {
      // Text copied from the pool at a varying offset.
      for (let p = 0; p < n; ) {
        const from = next() % (text.length - 4 * KiB);
        p += text.copy(piece, p, from, Math.min(text.length, from + (n - p)));
      }
    } else {
      // Binary like an executable's sections: random words with zero runs between them.
      random(piece);
      for (let p = 0; p < n; p += 256) if (next() % 2 === 0) piece.fill(0, p, Math.min(n, p + 128));
    }
    at += n;
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

export interface DiskSpec {
  sizeBytes: number;
  /** Fraction of the image that holds data. Default 0.1. */
  dataFraction?: number;
  seed?: number;
}

/**
 * A sparse disk image: data extents of 64 KiB-64 MiB (log-uniform lengths, block-aligned), with
 * holes of random lengths between them so the data is spread over the whole image; each extent is
 * a text/binary mix. Resolves to the data bytes written.
 */
export async function generateDisk(path: string, spec: DiskSpec): Promise<{ dataBytes: number; extents: number }> {
  const next = prng(spec.seed ?? 2026);
  const random = seededBytes(spec.seed ?? 2026);
  const text = textPool(next);
  const target = Math.floor((spec.sizeBytes * (spec.dataFraction ?? 0.1)) / BLOCK) * BLOCK;
  const lengths: number[] = [];
  for (let sum = 0; sum < target; ) {
    // Log-uniform from 64 KiB (2^16) to 64 MiB (2^26), rounded down to the block.
    const exp = 16 + (next() / 2 ** 32) * 10;
    const len = Math.min(target - sum, Math.max(BLOCK, Math.floor(2 ** exp / BLOCK) * BLOCK));
    lengths.push(len);
    sum += len;
  }
  const gapBlocks = Math.floor((spec.sizeBytes - target) / BLOCK);
  const weights = Array.from({ length: lengths.length + 1 }, () => next() / 2 ** 32);
  const totalWeight = weights.reduce((a, b) => a + b, 0);
  const fh = await open(path, "w");
  const buf = Buffer.allocUnsafe(WRITE_BYTES);
  let offset = 0;
  try {
    await fh.truncate(spec.sizeBytes);
    for (let i = 0; i < lengths.length; i++) {
      offset += Math.floor((gapBlocks * (weights[i] ?? 0)) / totalWeight) * BLOCK;
      const len = lengths[i] ?? 0;
      for (let at = 0; at < len; at += buf.length) {
        const piece = buf.subarray(0, Math.min(buf.length, len - at));
        fillMixed(piece, next, random, text);
        await writeAll(fh, piece, offset + at);
      }
      offset += len;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { dataBytes: target, extents: lengths.length };
}

export interface MemorySpec {
  sizeBytes: number;
  /** Fraction of the pages that are zero. Default 0.4. */
  zeroFraction?: number;
  seed?: number;
}

/**
 * A memory image as a hypervisor saves one: dense (every page written, zero pages too), in runs
 * of 1-512 pages that are zero (about `zeroFraction` of them) or a text/binary mix. Resolves to
 * the bytes of non-zero pages.
 */
export async function generateMemory(path: string, spec: MemorySpec): Promise<{ dataBytes: number }> {
  const next = prng((spec.seed ?? 8) ^ 0x5eed);
  const random = seededBytes((spec.seed ?? 8) + 1);
  const text = textPool(next);
  const zeroFraction = spec.zeroFraction ?? 0.4;
  const fh = await open(path, "w");
  const buf = Buffer.allocUnsafe(WRITE_BYTES);
  let dataBytes = 0;
  try {
    let runZero = false;
    let runLeft = 0;
    for (let off = 0; off < spec.sizeBytes; off += buf.length) {
      const n = Math.min(buf.length, spec.sizeBytes - off);
      const chunk = buf.subarray(0, n);
      for (let p = 0; p < n; ) {
        if (runLeft === 0) {
          runZero = next() / 2 ** 32 < zeroFraction;
          runLeft = 1 + (next() % 512);
        }
        const pages = Math.min(runLeft, Math.ceil((n - p) / PAGE));
        const run = chunk.subarray(p, Math.min(n, p + pages * PAGE));
        if (runZero) run.fill(0);
        else {
          fillMixed(run, next, random, text);
          dataBytes += run.length;
        }
        runLeft -= pages;
        p += run.length;
      }
      await writeAll(fh, chunk, off);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { dataBytes };
}

/** The data ranges [start, end) of an open file (SEEK_DATA/SEEK_HOLE); the whole file without the native module. */
function dataRanges(fd: number, size: number): Array<[number, number]> {
  if (!zeroCopy.available) return size > 0 ? [[0, size]] : [];
  const out: Array<[number, number]> = [];
  for (let at = 0; at < size; ) {
    const start = zeroCopy.seekData(fd, at);
    if (start < 0 || start >= size) break;
    const hole = zeroCopy.seekHole(fd, start);
    const end = hole < 0 ? size : Math.min(hole, size);
    if (end <= start) break;
    out.push([start, end]);
    at = end;
  }
  return out;
}

/** Sorted, merged union of two range lists. */
function union(a: Array<[number, number]>, b: Array<[number, number]>): Array<[number, number]> {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const out: Array<[number, number]> = [];
  for (const [s, e] of all) {
    const last = out.at(-1);
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/**
 * Whether two files hold the same bytes: equal sizes, and equal bytes wherever either holds data
 * (elsewhere both read as zeros). Reads only the data, so a 100 GiB image at 10% data costs 10%.
 * Resolves to undefined when equal, else to the first differing offset's description.
 */
export async function compareFiles(a: string, b: string): Promise<string | undefined> {
  const fa = await open(a, "r");
  const fb = await open(b, "r");
  try {
    const [sa, sb] = [(await fa.stat()).size, (await fb.stat()).size];
    if (sa !== sb) return `sizes differ: ${sa} and ${sb}`;
    const ranges = union(dataRanges(fa.fd, sa), dataRanges(fb.fd, sb));
    const ba = Buffer.allocUnsafe(WRITE_BYTES);
    const bb = Buffer.allocUnsafe(WRITE_BYTES);
    for (const [start, end] of ranges) {
      for (let at = start; at < end; at += WRITE_BYTES) {
        const n = Math.min(WRITE_BYTES, end - at);
        const [ra, rb] = await Promise.all([fa.read(ba, 0, n, at), fb.read(bb, 0, n, at)]);
        if (ra.bytesRead !== n || rb.bytesRead !== n) return `short read at ${at}`;
        if (!ba.subarray(0, n).equals(bb.subarray(0, n))) return `bytes differ in [${at}, ${at + n})`;
      }
    }
    return undefined;
  } finally {
    await fa.close();
    await fb.close();
  }
}

/**
 * Reads every data range of `path` back from the disk with O_DIRECT (no page cache), as a
 * verified copy must read what it wrote; returns the bytes read. Needs the native module (its
 * aligned buffers and SEEK_DATA).
 */
export async function readBackData(path: string): Promise<number> {
  if (!zeroCopy.available) throw new Error("the read-back needs the native module");
  const fh = await open(path, constants.O_RDONLY | constants.O_DIRECT);
  try {
    const size = (await fh.stat()).size;
    const buf = zeroCopy.alignedBuffer(WRITE_BYTES);
    let bytes = 0;
    for (const [start, end] of dataRanges(fh.fd, size)) {
      // Data ranges are block-aligned except at the end of the file: read whole blocks.
      const from = start - (start % DIRECT_IO_ALIGN);
      for (let at = from; at < end; ) {
        const want = Math.min(WRITE_BYTES, Math.ceil((end - at) / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN);
        const { bytesRead } = await fh.read(buf, 0, want, at);
        if (bytesRead === 0) break;
        bytes += Math.min(bytesRead, end - at);
        at += bytesRead;
      }
    }
    return bytes;
  } finally {
    await fh.close();
  }
}

/** Bytes a file has allocated on disk (st_blocks * 512). */
export async function allocatedBytes(path: string): Promise<number> {
  const fh = await open(path, "r");
  try {
    return (await fh.stat()).blocks * 512;
  } finally {
    await fh.close();
  }
}

/**
 * Drops `paths` from the page cache (after writing back their dirty pages): every tool then reads
 * its source from the disk, as a migration of an image that a VM just stopped writing would.
 * `dd iflag=nocache count=0` advises POSIX_FADV_DONTNEED over the whole file; only these files.
 */
export function dropFromCache(paths: string[]): void {
  execFileSync("sync");
  for (const p of paths) execFileSync("dd", [`if=${p}`, "iflag=nocache", "count=0", "status=none"]);
}
