// Typed errors of the native layer. C++ reports a failure with a `code` (an errno name such as
// "EPIPE", or a dwcp code such as "XOR_DELTA_CORRUPT"); mapNativeError turns it into one of
// these classes, keeping the original as `cause`. They extend DwcpError, so an error that escapes
// into a service keeps its code and retryability (errorCode/isRetryable in #common/errors.js).
import { DwcpError, NoSpaceError } from "#common/errors.js";

export { NoSpaceError };

export interface NativeErrorOptions {
  cause?: unknown;
}

/** Base of every error thrown by native/: a constant `code` and whether a retry can help. */
export abstract class NativeError extends DwcpError {}

/** DWCP_NATIVE=require and the module could not be loaded. */
export class NativeModuleMissingError extends NativeError {
  readonly code = "NATIVE_MODULE_MISSING";
  readonly retryable = false;
}

/** DWCP_NATIVE holds something other than auto, require or off. */
export class NativeConfigError extends NativeError {
  readonly code = "NATIVE_CONFIG_INVALID";
  readonly retryable = false;
}

/** A caller passed an argument of the wrong type or out of range. */
export class InvalidArgumentError extends NativeError {
  readonly code = "NATIVE_INVALID_ARGUMENT";
  readonly retryable = false;
}

/** An XOR delta is malformed or was made for a buffer of another length. */
export class XorDeltaCorruptError extends NativeError {
  readonly code = "XOR_DELTA_CORRUPT";
  readonly retryable = false;
}

/**
 * A sealed data record failed its AES-GCM tag: its bytes were altered in transit (or do not come
 * from the peer that holds the session's keys). Nothing of it was delivered. Retryable: a new
 * link may take a path that does not alter bytes.
 */
export class SealedRecordForgedError extends NativeError {
  readonly code = "SEALED_RECORD_FORGED";
  readonly retryable = true;
}

/**
 * A sealed data record that is not the next one the reader expects: a replayed, dropped or
 * reordered record (its counter), a malformed header, a length the reader did not ask for, or
 * the connection closed inside one. `detail` is the native reason (SEALED_ORDER, SEALED_HEADER,
 * SEALED_TOO_LONG, SEALED_TRUNCATED, SEALED_CRYPTO).
 */
export class SealedRecordInvalidError extends NativeError {
  readonly code = "SEALED_RECORD_INVALID";
  readonly retryable = true;
  constructor(
    message: string,
    readonly detail: string,
    options?: NativeErrorOptions,
  ) {
    super(message, options);
  }
}

/** zeroCopy.* was called although zeroCopy.available is false (TypeScript fallback). */
export class ZeroCopyUnavailableError extends NativeError {
  readonly code = "ZERO_COPY_UNAVAILABLE";
  readonly retryable = false;
}

/** Fields of a failed system call. */
export interface SyscallFailure {
  /** errno name, e.g. "EPIPE". */
  sysCode: string;
  errno: number;
  syscall: string;
}

/**
 * A failed system call. Callers that translate failures into their own terms (the mover's wire
 * codes) recognise it by class and its errno name by `sysCode`.
 */
export abstract class SyscallError extends NativeError implements SyscallFailure {
  readonly sysCode: string;
  readonly errno: number;
  readonly syscall: string;

  constructor(message: string, failure: SyscallFailure, options: NativeErrorOptions = {}) {
    super(`${message} (${failure.syscall}: ${failure.sysCode})`, options);
    ({ sysCode: this.sysCode, errno: this.errno, syscall: this.syscall } = failure);
  }
}

/** The fd pair or file system does not support the call (EINVAL, ENOSYS, EOPNOTSUPP, ...). */
export class ZeroCopyUnsupportedError extends SyscallError {
  readonly code = "ZERO_COPY_UNSUPPORTED";
  readonly retryable = false;
}

/** The peer closed the connection while we were sending (EPIPE, ECONNRESET). */
export class PeerClosedError extends SyscallError {
  readonly code = "PEER_CLOSED";
  readonly retryable = true;
}

/** A non-blocking socket did not become writable within the timeout. */
export class IoTimeoutError extends SyscallError {
  readonly code = "IO_TIMEOUT";
  readonly retryable = true;
}

/** The file descriptor is closed or not open for this kind of access (EBADF). */
export class BadFileDescriptorError extends SyscallError {
  readonly code = "BAD_FILE_DESCRIPTOR";
  readonly retryable = false;
}

/**
 * A failure a later attempt can get past: EAGAIN and EINTR by definition, EBUSY once the holder
 * lets go, EIO because a path through a flaky device or network file system may succeed again;
 * a persistent EIO is bounded by the caller's delivery limit.
 */
export class TransientIoError extends SyscallError {
  readonly code = "IO_TRANSIENT";
  readonly retryable = true;
}

/** Any other failed system call. */
export class SystemCallFailedError extends SyscallError {
  readonly code = "SYSCALL_FAILED";
  readonly retryable = false;
}

type SyscallErrorClass = new (message: string, failure: SyscallFailure, options?: NativeErrorOptions) => SyscallError;

const BY_ERRNO: Record<string, SyscallErrorClass> = {
  EINVAL: ZeroCopyUnsupportedError,
  ENOSYS: ZeroCopyUnsupportedError,
  EOPNOTSUPP: ZeroCopyUnsupportedError,
  ESPIPE: ZeroCopyUnsupportedError,
  EXDEV: ZeroCopyUnsupportedError,
  EPIPE: PeerClosedError,
  ECONNRESET: PeerClosedError,
  ENOTCONN: PeerClosedError,
  ETIMEDOUT: IoTimeoutError,
  EBADF: BadFileDescriptorError,
  EIO: TransientIoError,
  EAGAIN: TransientIoError,
  EBUSY: TransientIoError,
  EINTR: TransientIoError,
};

function field(err: unknown, key: string): unknown {
  return typeof err === "object" && err !== null ? (err as Record<string, unknown>)[key] : undefined;
}

const NO_SPACE = new Set(["ENOSPC", "EDQUOT"]);

/**
 * Maps an error thrown or rejected by the C++ binding to a NativeError, or for a full file system
 * to the NoSpaceError every service uses.
 */
export function mapNativeError(err: unknown): NativeError | NoSpaceError {
  if (err instanceof NativeError || err instanceof NoSpaceError) return err;
  const code = field(err, "code");
  const message = err instanceof Error ? err.message : String(err);
  if (code === "XOR_DELTA_CORRUPT") return new XorDeltaCorruptError(message, { cause: err });
  if (code === "SEALED_TAG") return new SealedRecordForgedError(message, { cause: err });
  if (typeof code === "string" && code.startsWith("SEALED_"))
    return new SealedRecordInvalidError(message, code, { cause: err });
  const errno = field(err, "errno");
  const syscall = field(err, "syscall");
  if (typeof code === "string" && typeof errno === "number" && typeof syscall === "string") {
    const detail = message.replace(/^[^:]*: /, "");
    if (NO_SPACE.has(code)) return new NoSpaceError(`${detail} (${syscall}: ${code})`, { cause: err, sysCode: code });
    const Cls = BY_ERRNO[code] ?? SystemCallFailedError;
    return new Cls(detail, { sysCode: code, errno, syscall }, { cause: err });
  }
  const sysCode = typeof code === "string" ? code : "UNKNOWN";
  return new SystemCallFailedError(message, { sysCode, errno: 0, syscall: "unknown" }, { cause: err });
}

/**
 * Runs an async native call and maps its rejection. The mapped error is made in this function's
 * continuation, so V8's async stack trace gives it the awaiting callers (a rejection from the
 * libuv pool has no JavaScript stack of its own); nothing is captured on the way in, which a
 * service making thousands of native calls a second would pay on every call.
 */
export async function withCallerStack<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw mapNativeError(err);
  }
}

/** compressChunk/decompressChunk need the LZ4 package, which is not installed. */
export class CompressionUnavailableError extends NativeError {
  readonly code = "COMPRESSION_UNAVAILABLE";
  readonly retryable = false;
}

/** A compressed chunk does not decompress to its recorded length. */
export class CompressedChunkCorruptError extends NativeError {
  readonly code = "COMPRESSED_CHUNK_CORRUPT";
  readonly retryable = false;
}
