/**
 * Base of every dwcp error, the native layer's included (native/errors.ts): a constant `code`
 * (see FailureCode/RejectionReason in schemas/), whether retrying can help, and the underlying
 * cause. Retryability decides the ack: a retryable failure naks with backoff, a permanent one
 * terminates and records a failure event.
 */
export abstract class DwcpError extends Error {
  abstract readonly code: string;
  abstract readonly retryable: boolean;
  constructor(message: string, options?: { cause?: unknown }) {
    // No `cause` property at all when there is none (not `cause: undefined`).
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
  }
}

/**
 * A file system is full (ENOSPC, or over quota: EDQUOT), wherever it was met: a native call
 * (native/errors.ts maps the errno) or a Node fs write at the mover's destination. Retryable:
 * not transient in itself, but it passes once an operator frees space or retention prunes, and
 * a retried work item naks with backoff under a bounded delivery count, whereas a permanent
 * failure would end a migration that could have finished.
 */
export class NoSpaceError extends DwcpError {
  readonly code = "NO_SPACE";
  readonly retryable = true;
  /** The errno name (ENOSPC or EDQUOT) where a system call reported it, as on a native SyscallError. */
  readonly sysCode: string | undefined;
  constructor(message: string, options?: { cause?: unknown; sysCode?: string }) {
    super(message, options);
    this.sysCode = options?.sysCode;
  }
}

/**
 * Writing, truncating or syncing a destination file (a mover's volume, a restored image) failed
 * for a reason other than space, or a write stopped short. Retryable: the next attempt writes
 * the same bytes again from the start of the batch or run.
 */
export class DestinationWriteError extends DwcpError {
  readonly code = "DESTINATION_WRITE_FAILED";
  readonly retryable = true;
}

/** A caller broke a contract of the code it called: a bug to fix, not a condition to retry. */
export class InvariantViolationError extends DwcpError {
  readonly code = "INVARIANT_VIOLATED";
  readonly retryable = false;
}

/** Invalid flags, environment or config file: lists every problem at once. */
export class ConfigError extends DwcpError {
  readonly code = "CONFIG_INVALID";
  readonly retryable = false;
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
  }
}

/** expect.lastSubjectSequence did not hold: somebody appended first. Re-fold and re-decide. */
export class VersionConflictError extends DwcpError {
  readonly code = "VERSION_CONFLICT";
  readonly retryable = true;
  constructor(
    readonly subject: string,
    readonly expectedSeq: number,
    options?: { cause?: unknown },
  ) {
    super(`${subject} moved past sequence ${expectedSeq}`, options);
  }
}

/**
 * A command met a version conflict on every one of its attempts: the aggregate is written to
 * faster than this writer can re-fold. Retry the command later.
 */
export class TooManyConflictsError extends DwcpError {
  readonly code = "TOO_MANY_CONFLICTS";
  readonly retryable = true;
  constructor(
    readonly aggregateId: string,
    readonly attempts: number,
    options?: { cause?: unknown },
  ) {
    super(`${aggregateId}: the command met a version conflict on each of ${attempts} attempts`, options);
  }
}

export function errorCode(err: unknown): string {
  return err instanceof DwcpError ? err.code : "INTERNAL";
}

export function isRetryable(err: unknown): boolean {
  return err instanceof DwcpError ? err.retryable : false;
}
