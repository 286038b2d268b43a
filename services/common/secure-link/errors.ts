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

/**
 * The TLS handshake failed: the peer spoke plaintext, presented no certificate or one from
 * another CA, or refused ours. Not retryable: a peer of this deployment would not do that.
 */
export class TlsHandshakeError extends DwcpError {
  readonly code = "TLS_HANDSHAKE_FAILED" as const;
  readonly retryable = false;
  constructor(
    readonly address: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The peer's certificate is valid but names another identity than the one dialled (the host
 * the coordinator named): a repointed registry entry or relay. Nothing was sent to it.
 */
export class PeerIdentityMismatchError extends DwcpError {
  readonly code = "PEER_IDENTITY_MISMATCH" as const;
  readonly retryable = false;
  constructor(
    readonly address: string,
    readonly expected: string,
    readonly presented: readonly string[],
  ) {
    super(
      `${address} presented a certificate for ${presented.length > 0 ? presented.join(", ") : "no dwcp identity"}, ` +
        `not ${expected}: refusing to send to it`,
    );
  }
}
