// One object per code path (TypeScript, scalar C++, SIMD C++), all with the same synchronous
// kernels, so tests and benches can run each path explicitly. Every native call is validated
// here first: C++ trusts its input.
import { InvalidArgumentError, mapNativeError, XorDeltaCorruptError } from "./errors.js";
import * as ts from "./fallback.js";
import { Tier, type NativeBinding } from "./loader.js";
import { pageCount, pageTreePages } from "./page-tree.js";
import { assertBytes, assertSameLength, assertU32 } from "./validate.js";

export interface ChunkAnalysis {
  /** CRC32C of the whole buffer. */
  crc32c: number;
  /** Every byte is zero. */
  allZero: boolean;
  /** One byte per 4 KiB page (the last may be partial): 1 = the page is all zero. */
  zeroPages: Uint8Array;
}

export type PathName = "ts" | "scalar" | "simd" | "simd-no-avx512";

export interface KernelPath {
  readonly name: PathName;
  crc32c(buf: Uint8Array, seed?: number): number;
  isZero(buf: Uint8Array): boolean;
  zeroPages(buf: Uint8Array): Uint8Array;
  analyzeChunk(buf: Uint8Array): ChunkAnalysis;
  fingerprints(buf: Uint8Array): BigUint64Array;
  strongHash(buf: Uint8Array): Buffer;
  /** BLAKE3 of buf (see pageTreePages) and, into cvs (32 bytes per page), each page's chaining value. */
  strongHashPages(buf: Uint8Array, cvs: Uint8Array): Buffer;
  /** The chaining value of one 4 KiB page at page index `index` of its input. */
  pageCv(page: Uint8Array, index: number): Buffer;
  /** The BLAKE3 hash of the input whose page chaining values `cvs` holds. */
  rootFromCvs(cvs: Uint8Array): Buffer;
  xorDeltaEncode(oldBuf: Uint8Array, newBuf: Uint8Array): Buffer;
  /** Applies delta to oldBuf into out (default: a new Buffer; oldBuf itself decodes in place). */
  xorDeltaDecode<T extends Uint8Array = Buffer>(oldBuf: Uint8Array, delta: Uint8Array, out?: T): T;
  /** Reads every byte without an early exit: the bench's memory-bandwidth probe. */
  readProbe(buf: Uint8Array): boolean;
}

function assertPageTree(what: string, n: number): number {
  const pages = pageTreePages(n);
  if (pages === undefined)
    throw new InvalidArgumentError(`${what}: ${n} bytes is not a power of two of at least two 4 KiB pages`);
  return pages;
}

function assertPageCvs(buf: Uint8Array, cvs: Uint8Array): void {
  assertBytes("buf", buf);
  assertBytes("cvs", cvs);
  const pages = assertPageTree("strongHashPages", buf.length);
  if (cvs.length !== 32 * pages)
    throw new InvalidArgumentError(`strongHashPages: cvs holds ${cvs.length} bytes, ${pages} pages need ${32 * pages}`);
}

function assertPage(page: Uint8Array, index: number): void {
  assertBytes("page", page);
  if (page.length !== ts.PAGE_SIZE)
    throw new InvalidArgumentError(`pageCv: a page is ${ts.PAGE_SIZE} bytes, not ${page.length}`);
  if (!Number.isInteger(index) || index < 0 || index >= 2 ** 30)
    throw new InvalidArgumentError(`pageCv: index ${index} is not a page index`);
}

function assertCvs(cvs: Uint8Array): void {
  assertBytes("cvs", cvs);
  assertPageTree("rootFromCvs", (cvs.length / 32) * ts.PAGE_SIZE);
}

function corrupt(): never {
  throw new XorDeltaCorruptError("xor delta is malformed or was made for a buffer of another length");
}

function decodeTarget<T extends Uint8Array>(oldBuf: Uint8Array, delta: Uint8Array, out: T | undefined): T {
  assertBytes("oldBuf", oldBuf);
  assertBytes("delta", delta);
  if (out === undefined) return Buffer.allocUnsafe(oldBuf.length) as unknown as T;
  assertBytes("out", out);
  if (out.length !== oldBuf.length) {
    throw new InvalidArgumentError(`out must have oldBuf's length ${oldBuf.length}, got ${out.length}`);
  }
  const overlaps =
    out.buffer === oldBuf.buffer &&
    out.byteOffset < oldBuf.byteOffset + oldBuf.length &&
    oldBuf.byteOffset < out.byteOffset + out.length;
  if (overlaps && out.byteOffset !== oldBuf.byteOffset)
    throw new InvalidArgumentError("out must be oldBuf itself or not overlap it");
  return out;
}

export const tsPath: KernelPath = {
  name: "ts",
  crc32c(buf, seed = 0) {
    assertBytes("buf", buf);
    assertU32("seed", seed);
    return ts.crc32c(buf, seed);
  },
  isZero(buf) {
    assertBytes("buf", buf);
    return ts.isZero(buf);
  },
  zeroPages(buf) {
    assertBytes("buf", buf);
    return ts.zeroPages(buf);
  },
  analyzeChunk(buf) {
    assertBytes("buf", buf);
    const zeroPages = ts.zeroPages(buf);
    return { crc32c: ts.crc32c(buf), allZero: zeroPages.every((z) => z === 1), zeroPages };
  },
  fingerprints(buf) {
    assertBytes("buf", buf);
    return ts.fingerprints(buf);
  },
  strongHash(buf) {
    assertBytes("buf", buf);
    return ts.blake3(buf);
  },
  strongHashPages(buf, cvs) {
    assertPageCvs(buf, cvs);
    return ts.blake3Pages(buf, cvs);
  },
  pageCv(page, index) {
    assertPage(page, index);
    return ts.blake3PageCv(page, index);
  },
  rootFromCvs(cvs) {
    assertCvs(cvs);
    return ts.blake3RootFromCvs(cvs);
  },
  xorDeltaEncode(oldBuf, newBuf) {
    assertBytes("oldBuf", oldBuf);
    assertBytes("newBuf", newBuf);
    assertSameLength(oldBuf, newBuf);
    return ts.xorDeltaEncode(oldBuf, newBuf);
  },
  xorDeltaDecode<T extends Uint8Array = Buffer>(oldBuf: Uint8Array, delta: Uint8Array, out?: T): T {
    const target = decodeTarget<T>(oldBuf, delta, out);
    return (ts.xorDeltaDecode(oldBuf, delta, target) ?? corrupt()) as T;
  },
  readProbe(buf) {
    assertBytes("buf", buf);
    return ts.orReduce(buf) !== 0;
  },
};

/** The kernels of the C++ binding at one tier. */
export function nativePath(b: NativeBinding, tier: Tier, name: PathName): KernelPath {
  return {
    name,
    crc32c(buf, seed = 0) {
      assertBytes("buf", buf);
      assertU32("seed", seed);
      return b.crc32c(buf, seed, tier);
    },
    isZero(buf) {
      assertBytes("buf", buf);
      return b.isZero(buf, tier);
    },
    zeroPages(buf) {
      assertBytes("buf", buf);
      const flags = new Uint8Array(pageCount(buf.length));
      b.zeroPages(buf, flags, tier);
      return flags;
    },
    analyzeChunk(buf) {
      assertBytes("buf", buf);
      const zeroPages = new Uint8Array(pageCount(buf.length));
      return { ...b.analyze(buf, zeroPages, tier), zeroPages };
    },
    fingerprints(buf) {
      assertBytes("buf", buf);
      const out = new BigUint64Array(pageCount(buf.length));
      b.fingerprints(buf, new Uint8Array(out.buffer), tier);
      return out;
    },
    strongHash(buf) {
      assertBytes("buf", buf);
      return b.strongHash(buf, tier);
    },
    strongHashPages(buf, cvs) {
      assertPageCvs(buf, cvs);
      return b.strongHashPages(buf, cvs, tier);
    },
    pageCv(page, index) {
      assertPage(page, index);
      return b.pageCv(page, index, tier);
    },
    rootFromCvs(cvs) {
      assertCvs(cvs);
      return b.rootFromCvs(cvs, tier);
    },
    xorDeltaEncode(oldBuf, newBuf) {
      assertBytes("oldBuf", oldBuf);
      assertBytes("newBuf", newBuf);
      assertSameLength(oldBuf, newBuf);
      const out = Buffer.allocUnsafe(b.xorDeltaBound(oldBuf.length));
      const n = b.xorDeltaEncode(oldBuf, newBuf, out, tier);
      // A small delta gets its own allocation instead of pinning the worst-case buffer.
      return n < out.length / 2 ? Buffer.from(out.subarray(0, n)) : out.subarray(0, n);
    },
    xorDeltaDecode<T extends Uint8Array = Buffer>(oldBuf: Uint8Array, delta: Uint8Array, out?: T): T {
      const target = decodeTarget<T>(oldBuf, delta, out);
      try {
        b.xorDeltaDecode(oldBuf, delta, target, tier);
      } catch (err) {
        throw mapNativeError(err);
      }
      return target;
    },
    readProbe(buf) {
      assertBytes("buf", buf);
      return b.orReduce(buf, tier);
    },
  };
}
