// Zero-copy system calls. Available only with the native module; otherwise every method fails
// with ZeroCopyUnavailableError and callers use plain reads and writes (check `available`).
import { InvalidArgumentError, mapNativeError, withCallerStack, ZeroCopyUnavailableError } from "./errors.js";
import type { FadviseAdvice, NativeBinding } from "./loader.js";
import { assertFd, assertLength, assertPositiveInt } from "./validate.js";

export type { FadviseAdvice };

export interface SendfileOptions {
  /** Longest wait for a non-blocking socket to become writable, in ms. Default 30000. */
  timeoutMs?: number;
}

export interface ZeroCopy {
  readonly available: boolean;
  /** sendfile(2) length bytes of inFd from offset to outFd (a socket or file); resolves to the
   *  bytes sent, fewer only if inFd ends first. Loops over partial writes; polls a
   *  non-blocking socket for POLLOUT. Runs on the libuv pool. */
  sendfile(outFd: number, inFd: number, offset: number, length: number, options?: SendfileOptions): Promise<number>;
  /** copy_file_range(2) between files (pread/pwrite where unsupported); resolves to bytes copied. */
  copyFileRange(inFd: number, inOffset: number, outFd: number, outOffset: number, length: number): Promise<number>;
  /** Next offset >= offset holding data, or -1 if there is none (lseek SEEK_DATA). */
  seekData(fd: number, offset: number): number;
  /** Next hole at or after offset; the file size counts as a hole (lseek SEEK_HOLE), -1 past the end. */
  seekHole(fd: number, offset: number): number;
  /** Deallocates a range, keeping the file size (fallocate PUNCH_HOLE|KEEP_SIZE). */
  punchHole(fd: number, offset: number, length: number): void;
  /** posix_fadvise(2). */
  fadvise(fd: number, offset: number, length: number, advice: FadviseAdvice): void;
}

const DEFAULT_TIMEOUT_MS = 30_000;

function unavailable(): never {
  throw new ZeroCopyUnavailableError(
    "zero-copy calls need the native module (DWCP_NATIVE is off or the module did not load): check zeroCopy.available and use read/write",
  );
}

export const unavailableZeroCopy: ZeroCopy = {
  available: false,
  sendfile: () => Promise.reject(new ZeroCopyUnavailableError("sendfile needs the native module: check zeroCopy.available")),
  copyFileRange: () => Promise.reject(new ZeroCopyUnavailableError("copyFileRange needs the native module: check zeroCopy.available")),
  seekData: unavailable,
  seekHole: unavailable,
  punchHole: unavailable,
  fadvise: unavailable,
};

function sync<T>(call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw mapNativeError(err);
  }
}

export function nativeZeroCopy(b: NativeBinding): ZeroCopy {
  return {
    available: true,
    async sendfile(outFd, inFd, offset, length, options = {}) {
      assertFd("outFd", outFd);
      assertFd("inFd", inFd);
      assertLength("offset", offset);
      assertLength("length", length);
      const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      assertPositiveInt("timeoutMs", timeoutMs, 0x7fffffff);
      return withCallerStack(() => b.sendfile(outFd, inFd, offset, length, timeoutMs));
    },
    async copyFileRange(inFd, inOffset, outFd, outOffset, length) {
      assertFd("inFd", inFd);
      assertLength("inOffset", inOffset);
      assertFd("outFd", outFd);
      assertLength("outOffset", outOffset);
      assertLength("length", length);
      return withCallerStack(() => b.copyFileRange(inFd, inOffset, outFd, outOffset, length));
    },
    seekData(fd, offset) {
      assertFd("fd", fd);
      assertLength("offset", offset);
      return sync(() => b.seekData(fd, offset));
    },
    seekHole(fd, offset) {
      assertFd("fd", fd);
      assertLength("offset", offset);
      return sync(() => b.seekHole(fd, offset));
    },
    punchHole(fd, offset, length) {
      assertFd("fd", fd);
      assertLength("offset", offset);
      assertLength("length", length);
      sync(() => b.punchHole(fd, offset, length));
    },
    fadvise(fd, offset, length, advice) {
      assertFd("fd", fd);
      assertLength("offset", offset);
      assertLength("length", length);
      const value = Object.hasOwn(b.fadviseAdvice, advice) ? b.fadviseAdvice[advice] : undefined;
      if (value === undefined) {
        throw new InvalidArgumentError(`advice must be one of ${Object.keys(b.fadviseAdvice).join(", ")}, got "${String(advice)}"`);
      }
      sync(() => b.fadvise(fd, offset, length, value));
    },
  };
}
