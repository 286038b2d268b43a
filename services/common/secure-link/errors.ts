import { DwcpError } from "#common/errors.js";

/** Connecting to `address` failed; the subclass says how. Retryable: the peer may come back. */
export abstract class ConnectError extends DwcpError {
  readonly retryable = true;
  constructor(
    readonly address: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A TCP connect did not complete within its deadline. */
export class ConnectTimeoutError extends ConnectError {
  readonly code = "CONNECT_TIMEOUT" as const;
}

/** A TCP connect failed (refused, unreachable, reset); `cause` is the socket error. */
export class ConnectFailedError extends ConnectError {
  readonly code = "CONNECT_FAILED" as const;
}

/** The caller's AbortSignal fired while connecting; `cause` is the signal's reason. */
export class ConnectAbortedError extends ConnectError {
  readonly code = "CONNECT_ABORTED" as const;
}

/** A listening socket could not be bound (address in use, no such interface). */
export class ListenFailedError extends DwcpError {
  readonly code = "LISTEN_FAILED" as const;
  readonly retryable = false;
}
