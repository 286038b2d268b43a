// Zero-copy system calls. Available only with the native module; otherwise every method fails
// with ZeroCopyUnavailableError and callers use plain reads and writes (check `available`).
import type { Socket } from "node:net";
import { InvalidArgumentError, mapNativeError, withCallerStack, ZeroCopyUnavailableError } from "./errors.js";
import type { FadviseAdvice, NativeBinding, NativeSocketTuning } from "./loader.js";
import { PAGE_SIZE } from "./fallback.js";
import { assertFd, assertLength, assertPositiveInt } from "./validate.js";

export type { FadviseAdvice, NativeSocketTuning };

/**
 * The file descriptor of a Node TCP socket (its libuv handle's), for sendfile and recv; undefined
 * when it has none (not connected, closed). Node keeps it on a private field: this is the one
 * place that reads it.
 */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

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
  /**
   * recv(2) from a non-blocking socket fd into buf[offset, offset+max) until at least `min` bytes
   * arrived; resolves to the count, fewer than `min` only at EOF. Runs on the libuv pool. Rejects
   * with ETIMEDOUT after timeoutMs without a byte, and with ECANCELED soon (<= 50 ms) after
   * `cancel[0]` becomes non-zero. The socket must not be read by anyone else meanwhile.
   *
   * With `stallMs`, no byte for stallMs resolves early to `-1 - n` (n: the bytes received so far,
   * fewer than `min`): a peer gone quiet mid-read (a cut link) does not keep a pool thread, which
   * the process's file I/O and DNS share, for the whole timeout. The caller waits for the socket
   * on its event loop and asks for the rest.
   */
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
  /**
   * Whether socket `fd` has bytes (or an EOF or error) to read now; never waits. Synchronous: a
   * reader waits for this on the event loop before it starts a recv that holds a pool thread.
   */
  readable(fd: number): boolean;
  /**
   * sync_file_range(SYNC_FILE_RANGE_WRITE): start writing a range's dirty pages to disk without
   * waiting, so a later fsync has little left to do. Not a durability guarantee by itself.
   */
  startWriteback(fd: number, offset: number, length: number): Promise<void>;
  /** copy_file_range(2) between files (pread/pwrite where unsupported); resolves to bytes copied. */
  copyFileRange(inFd: number, inOffset: number, outFd: number, outOffset: number, length: number): Promise<number>;
  /** Next offset >= offset holding data, or -1 if there is none (lseek SEEK_DATA). */
  seekData(fd: number, offset: number): number;
  /** Next hole at or after offset; the file size counts as a hole (lseek SEEK_HOLE), -1 past the end. */
  seekHole(fd: number, offset: number): number;
  /** Deallocates a range, keeping the file size (fallocate PUNCH_HOLE|KEEP_SIZE). */
  punchHole(fd: number, offset: number, length: number): void;
  /**
   * Reads buf[0, length) from fd at offset only if all of it is in the page cache, without ever
   * waiting for the disk (preadv2 RWF_NOWAIT); true if it did. False: read it another way (the
   * libuv pool). Always false without the native module or where the kernel lacks RWF_NOWAIT.
   */
  readIfCached(fd: number, buf: Uint8Array, offset: number, length: number): boolean;
  /**
   * The page fingerprints (see fingerprints()) of fd's bytes [offset, offset + length), read
   * through a temporary shared mapping rather than copied out with pread: a scan that only
   * compares fingerprints copies nothing. `offset` is a multiple of 4096; `into` holds one per
   * 4 KiB page. Runs on the libuv pool. Rejects with sysCode ENXIO when the file is shorter than
   * the range, or is truncated while it is read.
   */
  fingerprintFile(fd: number, offset: number, length: number, into: BigUint64Array): Promise<void>;
  /** posix_fadvise(2). */
  fadvise(fd: number, offset: number, length: number, advice: FadviseAdvice): void;
  /**
   * A pre-faulted buffer of `size` bytes whose memory starts on a `DIRECT_IO_ALIGN` boundary, as
   * O_DIRECT needs (cut from a slightly larger one; V8 never moves it). Its length and views at
   * multiples of DIRECT_IO_ALIGN stay aligned.
   */
  alignedBuffer(size: number): Buffer;
  /**
   * setsockopt on a TCP socket's fd: SO_SNDBUF / SO_RCVBUF when given (> 0; an explicit size
   * turns the kernel's autotuning off for that direction, and net.core.wmem_max / rmem_max cap
   * it), TCP_CONGESTION when given (an algorithm the kernel refuses is kept out, not an
   * error) and TCP_USER_TIMEOUT when given (> 0 ms: sent data unacknowledged for that long drops
   * the connection, with ETIMEDOUT, instead of retransmitting on a backing-off timer). Returns
   * what the socket has afterwards, with its smoothed RTT from TCP_INFO.
   */
  tuneSocket(
    fd: number,
    options: { sndbuf?: number; rcvbuf?: number; congestion?: string; userTimeoutMs?: number },
  ): NativeSocketTuning;
}

/** Memory, offset and length alignment that O_DIRECT I/O needs on Linux file systems here. */
export const DIRECT_IO_ALIGN = 4096;

const DEFAULT_TIMEOUT_MS = 30_000;

function unavailable(): never {
  throw new ZeroCopyUnavailableError(
    "zero-copy calls need the native module (DWCP_NATIVE is off or the module did not load): " +
      "check zeroCopy.available and use read/write",
  );
}

export const unavailableZeroCopy: ZeroCopy = {
  available: false,
  sendfile: () =>
    Promise.reject(new ZeroCopyUnavailableError("sendfile needs the native module: check zeroCopy.available")),
  recv: () => Promise.reject(new ZeroCopyUnavailableError("recv needs the native module: check zeroCopy.available")),
  readable: unavailable,
  startWriteback: () =>
    Promise.reject(new ZeroCopyUnavailableError("startWriteback needs the native module: check zeroCopy.available")),
  copyFileRange: () =>
    Promise.reject(new ZeroCopyUnavailableError("copyFileRange needs the native module: check zeroCopy.available")),
  seekData: unavailable,
  seekHole: unavailable,
  punchHole: unavailable,
  fadvise: unavailable,
  readIfCached: () => false,
  fingerprintFile: () =>
    Promise.reject(new ZeroCopyUnavailableError("fingerprintFile needs the native module: check zeroCopy.available")),
  alignedBuffer: unavailable,
  tuneSocket: unavailable,
};

function sync<T>(call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw mapNativeError(err);
  }
}

export function nativeZeroCopy(b: NativeBinding): ZeroCopy {
  /** Set once the kernel refuses RWF_NOWAIT: no point asking again. */
  let noWaitRefused = false;
  return {
    available: true,
    async sendfile(outFd, inFd, offset, length, options = {}) {
      assertFd("outFd", outFd);
      assertFd("inFd", inFd);
      assertLength("offset", offset);
      assertLength("length", length);
      const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      assertPositiveInt("timeoutMs", timeoutMs, 0x7fffffff);
      return await withCallerStack(() => b.sendfile(outFd, inFd, offset, length, timeoutMs));
    },
    async recv(fd, buf, offset, min, max, timeoutMs, cancel, stallMs) {
      assertFd("fd", fd);
      assertLength("offset", offset);
      assertLength("min", min);
      assertLength("max", max);
      if (min > max || offset + max > buf.length)
        throw new InvalidArgumentError(`recv: range ${offset}+${min}..${max} does not fit a ${buf.length}-byte buffer`);
      assertPositiveInt("timeoutMs", timeoutMs, 0x7fffffff);
      if (cancel.length < 1) throw new InvalidArgumentError("recv: cancel must hold at least one element");
      if (stallMs === undefined)
        return await withCallerStack(() => b.recv(fd, buf, offset, min, max, timeoutMs, cancel));
      assertPositiveInt("stallMs", stallMs, 0x7fffffff);
      return await withCallerStack(() => b.recv(fd, buf, offset, min, max, timeoutMs, cancel, stallMs));
    },
    readable(fd) {
      assertFd("fd", fd);
      return sync(() => b.readable(fd));
    },
    async startWriteback(fd, offset, length) {
      assertFd("fd", fd);
      assertLength("offset", offset);
      assertLength("length", length);
      return await withCallerStack(() => b.startWriteback(fd, offset, length));
    },
    async copyFileRange(inFd, inOffset, outFd, outOffset, length) {
      assertFd("inFd", inFd);
      assertLength("inOffset", inOffset);
      assertFd("outFd", outFd);
      assertLength("outOffset", outOffset);
      assertLength("length", length);
      return await withCallerStack(() => b.copyFileRange(inFd, inOffset, outFd, outOffset, length));
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
        throw new InvalidArgumentError(
          `advice must be one of ${Object.keys(b.fadviseAdvice).join(", ")}, got "${String(advice)}"`,
        );
      }
      sync(() => b.fadvise(fd, offset, length, value));
    },
    readIfCached(fd, buf, offset, length) {
      if (noWaitRefused) return false;
      assertFd("fd", fd);
      assertLength("offset", offset);
      assertLength("length", length);
      if (length > buf.length)
        throw new InvalidArgumentError(`readIfCached: ${length} bytes do not fit a ${buf.length}-byte buffer`);
      const n = sync(() => b.preadCached(fd, buf, offset, length));
      if (n === -2) noWaitRefused = true;
      return n === length;
    },
    async fingerprintFile(fd, offset, length, into) {
      assertFd("fd", fd);
      assertLength("offset", offset);
      assertLength("length", length);
      if (offset % PAGE_SIZE !== 0)
        throw new InvalidArgumentError(`fingerprintFile: offset ${offset} is not a multiple of ${PAGE_SIZE}`);
      const pages = Math.ceil(length / PAGE_SIZE);
      if (into.length !== pages)
        throw new InvalidArgumentError(
          `fingerprintFile: into holds ${into.length} fingerprints, the range has ${pages} pages`,
        );
      return await withCallerStack(() =>
        b.mappedFingerprints(fd, offset, length, new Uint8Array(into.buffer, into.byteOffset, into.byteLength)),
      );
    },
    tuneSocket(fd, options) {
      assertFd("fd", fd);
      const sndbuf = options.sndbuf ?? 0;
      const rcvbuf = options.rcvbuf ?? 0;
      assertLength("sndbuf", sndbuf);
      assertLength("rcvbuf", rcvbuf);
      if (sndbuf > 0x7fffffff || rcvbuf > 0x7fffffff)
        throw new InvalidArgumentError("tuneSocket: buffer size over 2 GiB");
      const congestion = options.congestion ?? "";
      if (!/^[a-z0-9_]{0,15}$/.test(congestion))
        throw new InvalidArgumentError(
          `tuneSocket: congestion control must be a kernel algorithm name, got "${congestion}"`,
        );
      const userTimeoutMs = options.userTimeoutMs ?? 0;
      assertLength("userTimeoutMs", userTimeoutMs);
      if (userTimeoutMs > 0x7fffffff) throw new InvalidArgumentError("tuneSocket: userTimeoutMs over 2^31 - 1");
      return sync(() => b.tuneSocket(fd, sndbuf, rcvbuf, congestion, userTimeoutMs));
    },
    alignedBuffer(size) {
      assertLength("size", size);
      const raw = Buffer.allocUnsafeSlow(size + DIRECT_IO_ALIGN);
      const at = b.alignmentOffset(raw, DIRECT_IO_ALIGN);
      const view = raw.subarray(at, at + size);
      view.fill(0); // pre-fault: first touch of fresh pages is slow (VMs especially)
      return view;
    },
  };
}
