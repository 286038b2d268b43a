/**
 * Base of every dwcp error: a constant `code` (see FailureCode/RejectionReason in schemas/),
 * whether retrying can help, and the underlying cause. Retryability decides the ack: a
 * retryable failure naks with backoff, a permanent one terminates and records a failure event.
 */
export abstract class DwcpError extends Error {
  abstract readonly code: string;
  abstract readonly retryable: boolean;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
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
