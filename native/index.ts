// The one module the rest of dwcp imports for checksums, zero detection, fingerprints, the
// strong hash, XOR deltas and zero-copy I/O. Runs the native module (native/src) when it loads
// and the bit-identical TypeScript fallback otherwise; DWCP_NATIVE=auto|require|off decides
// (see loader.ts). Arguments are validated here, failures are NativeError subclasses.
import { DirHandle, fallbackOps, nativeOps, procOps, type BeneathImpl, type BeneathOps } from "./beneath.js";
import { InvalidArgumentError, withCallerStack } from "./errors.js";
import * as ts from "./fallback.js";
import { installZstd } from "./compress.js";
import { loadNative, Tier, type NativeBinding } from "./loader.js";
import { pageCount } from "./page-tree.js";
import { nativePath, tsPath, type ChunkAnalysis, type KernelPath } from "./paths.js";
import { assertBytes, assertLength, assertU32 } from "./validate.js";
import { nativeZeroCopy, unavailableZeroCopy, type ZeroCopy } from "./zero-copy.js";
import { nativeSealed, unavailableSealed, type Sealed } from "./sealed.js";

export * from "./errors.js";
export type { ChunkAnalysis, KernelPath, PathName } from "./paths.js";
export { pageTreePages } from "./page-tree.js";
export {
  compressChunk,
  compressionCodec,
  decompressChunk,
  ZSTD_MAX_LEVEL,
  ZSTD_MIN_LEVEL,
  type Codec,
  type CompressedChunk,
  type CompressOptions,
} from "./compress.js";
export type { FadviseAdvice, NativeSocketTuning, SendfileOptions, ZeroCopy } from "./zero-copy.js";
export { DIRECT_IO_ALIGN, socketFd } from "./zero-copy.js";
export {
  SEALED_HEADER_BYTES,
  SEALED_IV_BYTES,
  SEALED_KEY_BYTES,
  SEALED_MAX_RECORD_BYTES,
  SEALED_PUMP_RECORD_BYTES,
  type Sealed,
  type SealKeys,
} from "./sealed.js";
export { loadNative, nativeMode, type NativeMode } from "./loader.js";
export {
  BeneathUnavailableError,
  DirHandle,
  PathRefusedError,
  type BeneathImpl,
  type EntryKind,
  type EntryStat,
  type OpenFileOptions,
  type PathRefusal,
} from "./beneath.js";

/** Zero maps and fingerprints are per page of this many bytes. */
export const PAGE_SIZE = ts.PAGE_SIZE;

/** Below this size the async variants compute inline: a pool round trip costs more. */
export const ASYNC_MIN_BYTES = 256 * 1024;

const loaded = loadNative();
const native: NativeBinding | undefined = loaded.binding;
installZstd(native);

/** Every path, for tests and benches; scalar/simd are undefined without the native module. */
export const paths: {
  readonly ts: KernelPath;
  readonly scalar: KernelPath | undefined;
  readonly simd: KernelPath | undefined;
  /** The SIMD path without AVX-512 (SSE4.2 CRC, AVX2 BLAKE3); equals simd on older CPUs. */
  readonly simdNoAvx512: KernelPath | undefined;
} = Object.freeze({
  ts: tsPath,
  scalar: native && nativePath(native, Tier.scalar, "scalar"),
  simd: native && nativePath(native, Tier.best, "simd"),
  simdNoAvx512: native && nativePath(native, Tier.noAvx512, "simd-no-avx512"),
});

const active: KernelPath = paths.simd ?? paths.ts;

/**
 * Every implementation of the calls beneath a held directory that this process has, for tests:
 * openat2 only where the kernel has it, the native walk and openat2 only with the native module.
 */
export const beneathImpls: Readonly<Partial<Record<BeneathImpl, BeneathOps>>> = Object.freeze({
  ...(native?.openBeneath !== undefined && native.openat2 ? { openat2: nativeOps(native, false) } : {}),
  ...(native?.openBeneath !== undefined ? { walk: nativeOps(native, true) } : {}),
  proc: native?.openBeneath !== undefined ? procOps : fallbackOps(),
});

const beneath: BeneathOps = beneathImpls.openat2 ?? beneathImpls.walk ?? fallbackOps();

/** Which implementation openRootDir uses: openat2, the native walk, or the /proc walk. */
export const beneathImpl: BeneathImpl = beneath.impl;

/**
 * Opens a root directory (absolute; symlinks in it are followed: the operator chose it) and holds
 * its fd: files and directories beneath it are then opened, created, renamed and removed relative
 * to that fd, never by path (see DirHandle). `impl` picks an implementation (tests).
 */
export function openRootDir(dir: string, impl?: BeneathImpl): DirHandle {
  const ops = impl === undefined ? beneath : beneathImpls[impl];
  if (ops === undefined) throw new InvalidArgumentError(`the ${impl} implementation is not available here`);
  return DirHandle.openRoot(dir, ops);
}

/** Why the native module is not in use, or undefined when it is. */
export const nativeUnavailableReason: string | undefined = loaded.reason;

/** CRC32C (Castagnoli) of buf; seed is the CRC of preceding data, to continue across buffers. */
export function crc32c(buf: Uint8Array, seed = 0): number {
  return active.crc32c(buf, seed);
}

/** CRC32C of A||B from crc(A), crc(B) and B's length in bytes. */
export function crc32cCombine(crcA: number, crcB: number, lenB: number): number {
  assertU32("crcA", crcA);
  assertU32("crcB", crcB);
  assertLength("lenB", lenB);
  return native ? native.crc32cCombine(crcA, crcB, lenB) : ts.crc32cCombine(crcA, crcB, lenB);
}

/** CRC32C of len zero bytes continuing from seed, in O(log len): for all-zero chunks. */
export function crc32cZeros(len: number, seed = 0): number {
  assertLength("len", len);
  assertU32("seed", seed);
  return native ? native.crc32cZeros(len, seed) : ts.crc32cZeros(len, seed);
}

export function isZero(buf: Uint8Array): boolean {
  return active.isZero(buf);
}

/** One byte per 4 KiB page (the last may be partial): 1 = all zero. */
export function zeroPages(buf: Uint8Array): Uint8Array {
  return active.zeroPages(buf);
}

/** One 64-bit fingerprint per 4 KiB page (weak; see native/README.md). */
export function fingerprints(buf: Uint8Array): BigUint64Array {
  return active.fingerprints(buf);
}

export function xorDeltaEncode(oldBuf: Uint8Array, newBuf: Uint8Array): Buffer {
  return active.xorDeltaEncode(oldBuf, newBuf);
}

/**
 * Rebuilds the new buffer from old and a delta. By default into a new Buffer; pass out to reuse
 * memory (out = oldBuf decodes in place). Throws XorDeltaCorruptError for a bad delta.
 */
export function xorDeltaDecode<T extends Uint8Array = Buffer>(oldBuf: Uint8Array, delta: Uint8Array, out?: T): T {
  return active.xorDeltaDecode(oldBuf, delta, out);
}

/** BLAKE3-256 of buf, synchronously (blocks the event loop: prefer strongHash). */
export function strongHashSync(buf: Uint8Array): Buffer {
  return active.strongHash(buf);
}

/**
 * BLAKE3-256 of buf and the chaining value of each of its 4 KiB pages (32 bytes each, into cvs),
 * synchronously; buf must be a power of two of at least two pages (pageTreePages).
 */
export function strongHashPages(buf: Uint8Array, cvs: Uint8Array): Buffer {
  return active.strongHashPages(buf, cvs);
}

/** The chaining value of the 4 KiB page at page index `index` of a page-tree input. */
export function pageChainingValue(page: Uint8Array, index: number): Buffer {
  return active.pageCv(page, index);
}

/** The BLAKE3-256 of the input whose page chaining values are `cvs`: equal to strongHash of it. */
export function rootFromChainingValues(cvs: Uint8Array): Buffer {
  return active.rootFromCvs(cvs);
}

/** Bytes of a BLAKE3-256 digest (strongHash). */
export const STRONG_HASH_BYTES = 32;

/**
 * The hash of a volume from the hashes of its chunks: BLAKE3-256 over the chunk hashes (32
 * bytes each, strongHash of each chunk) concatenated in offset order, a two-level hash tree.
 * The source's log and the destination compute it alike; a volume of no chunks hashes the empty
 * input. `path` picks a kernel path (tests); default the live one.
 */
export function volumeHash(chunkHashes: Uint8Array, path: KernelPath = active): Buffer {
  assertBytes("chunkHashes", chunkHashes);
  if (chunkHashes.length % STRONG_HASH_BYTES !== 0) {
    throw new InvalidArgumentError(
      `volumeHash: ${chunkHashes.length} bytes is not a whole number of ${STRONG_HASH_BYTES}-byte chunk hashes`,
    );
  }
  return path.strongHash(chunkHashes);
}

/** CRC32C and zero map of a chunk in one pass, synchronously. */
export function analyzeChunkSync(buf: Uint8Array): ChunkAnalysis {
  return active.analyzeChunk(buf);
}

/**
 * Runs a kernel inline for small buffers or without the native module, else on the libuv pool.
 * Argument errors reject the promise rather than throw.
 */
function offload<T>(buf: Uint8Array, inline: () => T, pooled: (b: NativeBinding) => Promise<T>, seed = 0): Promise<T> {
  try {
    assertBytes("buf", buf);
    assertU32("seed", seed);
    if (native === undefined || buf.length < ASYNC_MIN_BYTES) return Promise.resolve(inline());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
  return withCallerStack(() => pooled(native));
}

/**
 * With SIMD kernels (~25 GB/s) a chunk of up to this size is analyzed inline: 8 MiB costs about
 * 0.3 ms of the event loop, less than a libuv pool round trip costs on a busy machine, and the
 * bytes are hot in this core's cache (they were just read or received).
 */
export const ANALYZE_INLINE_MAX_BYTES = 8 * 1024 * 1024;

/** CRC32C and zero map of a chunk in one pass over memory, on the libuv pool for big chunks. */
export function analyzeChunk(buf: Uint8Array): Promise<ChunkAnalysis> {
  if (paths.simd !== undefined && active === paths.simd && buf.length <= ANALYZE_INLINE_MAX_BYTES) {
    try {
      return Promise.resolve(active.analyzeChunk(buf));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
  return offload(
    buf,
    () => active.analyzeChunk(buf),
    async (b) => {
      const zeroPages = new Uint8Array(pageCount(buf.length));
      return { ...(await b.analyzeAsync(buf, zeroPages)), zeroPages };
    },
  );
}

export function crc32cAsync(buf: Uint8Array, seed = 0): Promise<number> {
  return offload(
    buf,
    () => active.crc32c(buf, seed),
    (b) => b.crc32cAsync(buf, seed),
    seed,
  );
}

/**
 * Fingerprints of buf's pages, on the libuv pool for big buffers. With `into` (one element per
 * page) they are written there, and `into` is what the promise resolves to.
 */
export function fingerprintsAsync(buf: Uint8Array, into?: BigUint64Array): Promise<BigUint64Array> {
  if (into !== undefined && into.length !== pageCount(buf.length)) {
    return Promise.reject(
      new RangeError(`into holds ${into.length} fingerprints, buf has ${pageCount(buf.length)} pages`),
    );
  }
  const inline = (): BigUint64Array => {
    const f = active.fingerprints(buf);
    if (into === undefined) return f;
    into.set(f);
    return into;
  };
  return offload(buf, inline, async (b) => {
    const out = into ?? new BigUint64Array(pageCount(buf.length));
    await b.fingerprintsAsync(buf, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    return out;
  });
}

/** BLAKE3-256 of buf (32 bytes), on the libuv pool for big buffers: calls run in parallel. */
export function strongHash(buf: Uint8Array): Promise<Buffer> {
  return offload(
    buf,
    () => active.strongHash(buf),
    (b) => b.strongHashAsync(buf),
  );
}

export const zeroCopy: ZeroCopy = native ? nativeZeroCopy(native) : unavailableZeroCopy;

/** AES-128-GCM sealed records over a socket fd (the data channel's bulk direction). */
export const sealed: Sealed = native?.sealSend !== undefined ? nativeSealed(native) : unavailableSealed;

const KERNELS = ["crc32c", "zero", "fingerprint", "strongHash", "xorDelta", "zeroCopy"] as const;

/** The live path per kernel, e.g. {crc32c: "avx512-vpclmul", ...} or "ts-fallback" for all. */
export function capabilities(): Record<string, string> {
  if (native) return native.capabilities(Tier.best);
  return Object.fromEntries(KERNELS.map((k) => [k, "ts-fallback"]));
}
