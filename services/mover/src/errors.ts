import type { FailureCode, MoverRegistration } from "#schemas/index.js";
import { DestinationWriteError, DwcpError, NoSpaceError } from "#common/errors.js";

export { DestinationWriteError, NoSpaceError };

/**
 * Mover failures. `code` is a FailureCode wherever one fits, so it can travel as the reason of a
 * ChunkBatchFailed event; `retryable` decides whether the work item is naked or terminated.
 */

/** The bytes that arrived do not match the CRC32C the sender computed (after all resends). */
export class ChecksumMismatchError extends DwcpError {
  readonly code = "CHECKSUM_MISMATCH";
  readonly retryable = true;
  readonly offset: number;
  readonly expected: number | undefined;
  readonly actual: number | undefined;
  constructor(
    detail: { offset: number; expected?: number; actual?: number; message?: string },
    options?: { cause?: unknown },
  ) {
    super(detail.message ?? `chunk at offset ${detail.offset} failed its CRC32C check`, options);
    this.offset = detail.offset;
    this.expected = detail.expected;
    this.actual = detail.actual;
  }
}

/** Could not connect to the destination mover, or it went silent or away mid-batch. */
export class DestinationUnreachableError extends DwcpError {
  readonly code = "DESTINATION_UNREACHABLE";
  readonly retryable = true;
}

/** The data-channel handshake failed: wrong cluster secret or an unknown migration. */
export class AuthFailedError extends DwcpError {
  readonly code = "AUTH_FAILED";
  readonly retryable = false;
}

/**
 * The peer sent bytes that are not DWCP data channel v1 (bad magic, version, type, size or
 * order). Retryable: the usual cause is a corrupted or truncated stream, and the delivery limit
 * bounds retries of a systematic mismatch.
 */
export class ProtocolError extends DwcpError {
  readonly code = "PROTOCOL_ERROR";
  readonly retryable = true;
}

/** Reading the source volume failed (I/O error, permission). */
export class SourceReadError extends DwcpError {
  readonly code = "SOURCE_READ_FAILED";
  readonly retryable = true;
}

/** The source volume is shorter than planned: it changed under us. */
export class SourceChangedError extends DwcpError {
  readonly code = "SOURCE_CHANGED";
  readonly retryable = false;
}

/**
 * A file ended before the range dwcp was checksumming: it was truncated or replaced while being
 * read. Not retryable: the planned sizes no longer hold, so the migration must be started again.
 */
export class FileEndedEarlyError extends DwcpError {
  readonly code = "FILE_ENDED_EARLY";
  readonly retryable = false;
}

/** A path (or a symlink in it) leads outside every configured root, or a name is not a basename. */
export class PathOutsideRootError extends DwcpError {
  readonly code = "PATH_OUTSIDE_ROOT";
  readonly retryable = false;
  constructor(
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${JSON.stringify(path)} ${reason}`, options);
  }
}

/** A path that must exist does not. */
export class PathNotFoundError extends DwcpError {
  readonly code = "PATH_NOT_FOUND";
  readonly retryable = false;
  constructor(
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(`${JSON.stringify(path)} does not exist`, options);
  }
}

/** The caller's AbortSignal fired; nothing is retried on our side. */
export class TransferAbortedError extends DwcpError {
  readonly code = "ABORTED";
  readonly retryable = false;
}

/** The destination refused a batch for a reason that has no more specific class. */
export class RemoteFailureError extends DwcpError {
  readonly retryable: boolean;
  constructor(
    readonly code: FailureCode,
    message: string,
    retryable: boolean,
  ) {
    super(message);
    this.retryable = retryable;
  }
}

const FROM_WIRE: Partial<Record<FailureCode, (message: string, offset: number) => DwcpError>> = {
  CHECKSUM_MISMATCH: (message, offset) => new ChecksumMismatchError({ offset, message }),
  NO_SPACE: (message) => new NoSpaceError(message),
  AUTH_FAILED: (message) => new AuthFailedError(message),
  PROTOCOL_ERROR: (message) => new ProtocolError(message),
  DESTINATION_WRITE_FAILED: (message) => new DestinationWriteError(message),
  PATH_OUTSIDE_ROOT: (message) => new PathOutsideRootError("destination", `refused: ${message}`),
};

/** Rebuild a typed error from a failure code the peer sent on the wire. */
export function errorFromWire(code: FailureCode, message: string, offset = 0): DwcpError {
  const text = `destination: ${message}`;
  return FROM_WIRE[code]?.(text, offset) ?? new RemoteFailureError(code, text, code !== "INTERNAL");
}

/**
 * Another process holds a live lease on this host id (its entry in dwcp_movers was renewed
 * within the lease TTL): two movers advertising one host would overwrite each other's address.
 */
export class HostLeaseHeldError extends DwcpError {
  readonly code = "HOST_LEASE_HELD";
  readonly retryable = false;
  constructor(
    readonly host: string,
    readonly holder: MoverRegistration,
    ageMs: number,
    ttlMs: number,
  ) {
    super(
      `host id "${host}" is held by another mover (pid ${holder.pid}, started ${holder.startedAt}, ` +
        `data address ${holder.dataAddress}, last heartbeat ${seconds(ageMs)} ago): ` +
        `stop that mover, or wait until its lease expires (${seconds(ttlMs)} after its last ` +
        `heartbeat), or start this one with --standby to serve the host's work queue beside it`,
    );
  }
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
