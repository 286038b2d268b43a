// Loads native/build/Release/dwcp_native.node according to DWCP_NATIVE:
//   auto (default) - load it if possible, else one process warning and the TypeScript fallback
//   require        - a missing or broken module throws NativeModuleMissingError (production)
//   off            - never load it
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { processSetting } from "#common/config.js";
import type { EntryStat } from "./beneath.js";
import { NativeConfigError, NativeModuleMissingError } from "./errors.js";

/** Which native code path a call runs: the best the CPU has, scalar C++, or best minus AVX-512. */
export const Tier = { best: 0, scalar: 1, noAvx512: 2 } as const;
export type Tier = (typeof Tier)[keyof typeof Tier];

export type FadviseAdvice = "normal" | "sequential" | "random" | "noreuse" | "willneed" | "dontneed";

export interface NativeAnalysis {
  crc32c: number;
  allZero: boolean;
}

/** The C++ binding (native/src/addon.cc). Arguments are validated by the callers. */
/** What a socket has after tuneSocket (buffer sizes as the kernel reports them: doubled). */
export interface NativeSocketTuning {
  sndbuf: number;
  rcvbuf: number;
  congestion?: string;
  congestionSet: boolean;
  rttUs?: number;
  /** The smallest RTT the connection has seen (tcpi_min_rtt), µs. */
  minRttUs?: number;
}

export interface NativeBinding {
  crc32c(buf: Uint8Array, seed: number, tier: Tier): number;
  crc32cCombine(crcA: number, crcB: number, lenB: number): number;
  crc32cZeros(len: number, seed: number): number;
  isZero(buf: Uint8Array, tier: Tier): boolean;
  zeroPages(buf: Uint8Array, flags: Uint8Array, tier: Tier): boolean;
  orReduce(buf: Uint8Array, tier: Tier): boolean;
  analyze(buf: Uint8Array, flags: Uint8Array, tier: Tier): NativeAnalysis;
  fingerprints(buf: Uint8Array, out: Uint8Array, tier: Tier): void;
  strongHash(buf: Uint8Array, tier: Tier): Buffer;
  strongHashPages(buf: Uint8Array, cvs: Uint8Array, tier: Tier): Buffer;
  pageCv(page: Uint8Array, index: number, tier: Tier): Buffer;
  rootFromCvs(cvs: Uint8Array, tier: Tier): Buffer;
  xorDeltaBound(n: number): number;
  xorDeltaEncode(oldBuf: Uint8Array, newBuf: Uint8Array, out: Uint8Array, tier: Tier): number;
  xorDeltaDecode(oldBuf: Uint8Array, delta: Uint8Array, out: Uint8Array, tier: Tier): void;
  capabilities(tier: Tier): Record<string, string>;
  crc32cAsync(buf: Uint8Array, seed: number): Promise<number>;
  analyzeAsync(buf: Uint8Array, flags: Uint8Array): Promise<NativeAnalysis>;
  fingerprintsAsync(buf: Uint8Array, out: Uint8Array): Promise<void>;
  strongHashAsync(buf: Uint8Array): Promise<Buffer>;
  /** One zstd frame of buf at level (-7..19) on the libuv pool; null when zstd failed. */
  zstdPackAsync(buf: Uint8Array, level: number): Promise<Buffer | null>;
  /** Decodes one zstd frame declaring exactly out.length bytes into out; rejects otherwise. */
  zstdUnpackAsync(packed: Uint8Array, out: Uint8Array): Promise<void>;
  sendfile(outFd: number, inFd: number, offset: number, length: number, timeoutMs: number): Promise<number>;
  copyFileRange(inFd: number, inOffset: number, outFd: number, outOffset: number, length: number): Promise<number>;
  seekData(fd: number, offset: number): number;
  seekHole(fd: number, offset: number): number;
  punchHole(fd: number, offset: number, length: number): void;
  fadvise(fd: number, offset: number, length: number, advice: number): void;
  alignmentOffset(buf: Uint8Array, align: number): number;
  preadCached(fd: number, buf: Uint8Array, offset: number, length: number): number;
  tuneSocket(fd: number, sndbuf: number, rcvbuf: number, congestion: string, userTimeoutMs: number): NativeSocketTuning;
  mappedFingerprints(fd: number, offset: number, length: number, out: Uint8Array): Promise<void>;
  startWriteback(fd: number, offset: number, length: number): Promise<void>;
  recv(
    fd: number,
    buf: Uint8Array,
    offset: number,
    min: number,
    max: number,
    timeoutMs: number,
    cancel: Int32Array,
    stallMs?: number,
  ): Promise<number>;
  sealSend(
    fd: number,
    key: Uint8Array,
    iv: Uint8Array,
    counter: bigint,
    parts: Uint8Array[],
    timeoutMs: number,
    cancel: Int32Array,
  ): Promise<number>;
  recvOpen(
    fd: number,
    key: Uint8Array,
    iv: Uint8Array,
    counter: bigint,
    header: Uint8Array,
    buf: Uint8Array,
    offset: number,
    capacity: number,
    timeoutMs: number,
    cancel: Int32Array,
    progress?: Int32Array,
    stallMs?: number,
  ): Promise<number>;
  readable(fd: number): boolean;
  pump(
    from: number,
    to: number,
    key: Uint8Array,
    iv: Uint8Array,
    opening: boolean,
    timeoutMs: number,
    cancel: Int32Array,
  ): Promise<number>;
  sealBuffer(
    key: Uint8Array,
    iv: Uint8Array,
    counter: bigint,
    header: Uint8Array,
    data: Uint8Array,
    opening: boolean,
  ): Promise<void>;
  fadviseAdvice: Record<FadviseAdvice, number>;
  openBeneath(dirfd: number, path: string, flags: number, mode: number, walk: boolean): number;
  mkdirAt(dirfd: number, name: string, mode: number): boolean;
  renameAt(fromDir: number, from: string, toDir: number, to: string, noReplace: boolean): void;
  unlinkAt(dirfd: number, name: string, isDir: boolean): void;
  statAt(dirfd: number, name: string): EntryStat | undefined;
  /** Whether the kernel has openat2 (probed at load). */
  openat2: boolean;
}

export type NativeMode = "auto" | "require" | "off";

/** The addon node-gyp builds in native/build, also when this file runs compiled from dist/native/. */
export const NATIVE_MODULE_PATH = fileURLToPath(
  new URL(
    `${import.meta.url.includes("/dist/native/") ? "../../native/" : "./"}build/Release/dwcp_native.node`,
    import.meta.url,
  ),
);

/** DWCP_NATIVE, read through #common/config.js, or `value` in its place when one is given. */
export function nativeMode(value?: string): NativeMode {
  const env = value === undefined ? process.env : { DWCP_NATIVE: value };
  try {
    return processSetting("native", env);
  } catch (err) {
    throw new NativeConfigError(`DWCP_NATIVE must be auto, require or off, got "${env["DWCP_NATIVE"]}"`, {
      cause: err,
    });
  }
}

const REQUIRED = ["crc32c", "analyzeAsync", "strongHashAsync", "sendfile", "capabilities"] as const;

function loadFrom(path: string): NativeBinding {
  if (!existsSync(path)) throw new NativeModuleMissingError(`${path} does not exist (run "npm run build:native")`);
  const mod = createRequire(import.meta.url)(path) as Record<string, unknown>;
  const missing = REQUIRED.filter((k) => typeof mod[k] !== "function");
  if (missing.length > 0) {
    throw new NativeModuleMissingError(`${path} lacks ${missing.join(", ")}: rebuild it with "npm run build:native"`);
  }
  return mod as unknown as NativeBinding;
}

export interface LoadResult {
  mode: NativeMode;
  binding: NativeBinding | undefined;
  /** Why the binding is undefined. */
  reason?: string;
}

/** Loads the binding once per process; in auto mode a failure is one warning, not an error. */
export function loadNative(mode = nativeMode(), path = NATIVE_MODULE_PATH): LoadResult {
  if (mode === "off") return { mode, binding: undefined, reason: "DWCP_NATIVE=off" };
  try {
    return { mode, binding: loadFrom(path) };
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    if (mode === "require") {
      throw new NativeModuleMissingError(`DWCP_NATIVE=require but the native module did not load: ${reason}`, {
        cause: err,
      });
    }
    process.emitWarning(`dwcp native module not loaded, using the TypeScript fallback: ${reason}`, {
      code: "DWCP_NATIVE_FALLBACK",
      detail: 'Build it with "npm run build:native", or set DWCP_NATIVE=off to choose the fallback explicitly.',
    });
    return { mode, binding: undefined, reason };
  }
}
