import { DwcpError } from "#common/errors.js";

/** A TCP connect did not complete within its deadline. */
export class ConnectTimeoutError extends DwcpError {
  readonly code = "CONNECT_TIMEOUT" as const;
  readonly retryable = true;
  constructor(
    readonly address: string,
    readonly timeoutMs: number,
  ) {
    super(`connecting to ${address} timed out after ${timeoutMs} ms`);
  }
}

/** A TCP connect failed (refused, unreachable, reset); `cause` is the socket error. */
export class ConnectFailedError extends DwcpError {
  readonly code = "CONNECT_FAILED" as const;
  readonly retryable = true;
  constructor(
    readonly address: string,
    cause: Error,
  ) {
    super(`cannot connect to ${address}: ${cause.message}`, { cause });
  }
}

/** The caller's AbortSignal fired while connecting; `cause` is the signal's reason. */
export class ConnectAbortedError extends DwcpError {
  readonly code = "CONNECT_ABORTED" as const;
  readonly retryable = true;
  constructor(
    readonly address: string,
    reason: unknown,
  ) {
    super(`connecting to ${address} was aborted`, { cause: reason });
  }
}

/** A listening socket could not be bound (address in use, no such interface). */
export class ListenFailedError extends DwcpError {
  readonly code = "LISTEN_FAILED" as const;
  readonly retryable = false;
  constructor(
    readonly address: string,
    cause: unknown,
  ) {
    super(`cannot listen on ${address}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** A peer broke the framing: oversized record, bad header, or a close in the middle of a frame. */
export class FramingError extends DwcpError {
  readonly code = "FRAMING_VIOLATION" as const;
  readonly retryable = true;
}

/** A reader or decoder was driven out of order by its caller: a bug in dwcp, not the peer. */
export class ReaderMisuseError extends DwcpError {
  readonly code = "READER_MISUSE" as const;
  readonly retryable = false;
}
