import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from "node:tls";
import type { Logger } from "#common/logger.js";
import {
  ConnectAbortedError,
  ConnectFailedError,
  ConnectTimeoutError,
  ListenFailedError,
  PeerIdentityMismatchError,
  TlsHandshakeError,
} from "./errors.js";
import { RefusalLog } from "./refusal-log.js";
import { clientTlsOptions, hostsOf, peerIdentities, serverTlsOptions, type LinkTls } from "./tls.js";

/**
 * The one place dwcp's authenticated links (the mover data channel and the replication link)
 * meet TCP: dial() and listen() hand each protocol a connected socket, and handshake.ts proves
 * the per-link key on top of it. With `tls` both are TLS 1.3 with mutual authentication (see
 * tls.ts): dial() checks that the peer's certificate names the identity it meant to reach,
 * listen() that the peer is a host of the deployment, and refusals are logged with the peer's
 * address (rate-limited: refusal-log.ts). A TLS socket is still a net.Socket to the protocols,
 * but its fd carries ciphertext: sendfile() and the mover's native recv must step aside for it.
 */

export function addressOf(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

const timedOut = (address: string, ms: number): ConnectTimeoutError =>
  new ConnectTimeoutError(address, `connecting to ${address} timed out after ${ms} ms`);

/** What the dialling side of a TLS link needs: its material and the identity the peer must name. */
export interface DialTls {
  tls: LinkTls;
  /** The identity URI the peer's certificate must name, e.g. `dwcp:host:b` (pki.hostIdentity). */
  expectIdentity: string;
  /**
   * Protocol revisions to offer by ALPN, preferred first; the socket's `alpnProtocol` says which
   * one the peer took (false: none, e.g. a peer that offers none of its own).
   */
  alpn?: readonly string[];
}

export interface DialOptions {
  host: string;
  port: number;
  /** Give up connecting (TCP and TLS handshake) after this long. Default: the kernel's connect timeout. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** TLS 1.3 with mutual authentication. Default: plaintext (trusted links only). */
  tls?: DialTls;
}

/** A TLS or OpenSSL failure (a handshake alert, a certificate the CA did not issue), not a network one. */
export function isTlsFailure(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return (
    typeof code === "string" &&
    /^(ERR_SSL_|ERR_TLS_|UNABLE_TO_|CERT_|SELF_SIGNED_|DEPTH_ZERO_|INVALID_CA|INVALID_PURPOSE)/.test(code)
  );
}

/** What a TLS failure on a link to `address` becomes; other errors are returned as they are. */
export function tlsFailureOf(address: string, err: Error): Error {
  if (err instanceof TlsHandshakeError || !isTlsFailure(err)) return err;
  return new TlsHandshakeError(address, `TLS with ${address} failed: ${err.message}`, { cause: err });
}

/** The TLS alerts by which a peer refuses our certificate (as OpenSSL names them in Node's codes). */
const CERTIFICATE_ALERT = new RegExp(
  "^ERR_SSL_(SSLV3|TLSV1|TLSV13)_ALERT_(UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_REQUIRED|CERTIFICATE_UNKNOWN|" +
    "ACCESS_DENIED|UNSUPPORTED_CERTIFICATE|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED)$",
);

/**
 * An alert by which a peer refused our certificate after our side of the TLS 1.3 handshake
 * completed (a non-Node peer; dwcp's own listener just closes, see closedAfterHandshake). Other
 * TLS errors on an established session (a record that fails its MAC: bytes altered in transit)
 * are the network's, and stay retryable.
 */
export function isCertificateRefusal(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && CERTIFICATE_ALERT.test(code);
}

/**
 * What a TLS session that the peer closes before its first protocol byte becomes: in TLS 1.3 the
 * client's handshake completes before the server has checked the client's certificate, and a
 * listener that refuses it (another CA, no dwcp host) just closes.
 */
export function closedAfterHandshake(address: string): TlsHandshakeError {
  return new TlsHandshakeError(
    address,
    `${address} closed the TLS session before its first answer: it refused this host's certificate ` +
      "(is it from the deployment's CA and for a dwcp host?)",
  );
}

/**
 * A connected socket with Nagle off; with `tls`, a TLS 1.3 session whose peer proved the
 * expected identity. Rejects with ConnectTimeoutError, ConnectFailedError, ConnectAbortedError,
 * TlsHandshakeError or PeerIdentityMismatchError; after it resolves, socket errors are the
 * protocol's to handle (a server that refuses our certificate says so on the first read: see
 * tlsFailureOf).
 */
export async function dial(o: DialOptions): Promise<Socket> {
  const address = addressOf(o.host, o.port);
  const aborted = (): ConnectAbortedError =>
    new ConnectAbortedError(address, `connecting to ${address} was aborted`, { cause: o.signal?.reason });
  if (o.signal?.aborted === true) throw aborted();
  const started = performance.now();
  const raw = connect({ host: o.host, port: o.port, noDelay: true });
  await settle(raw, "connect", o, address, o.timeoutMs, aborted, (err) => {
    return new ConnectFailedError(address, `cannot connect to ${address}: ${err.message}`, { cause: err });
  });
  if (o.tls === undefined) return raw;
  const alpn = o.tls.alpn === undefined ? {} : { ALPNProtocols: [...o.tls.alpn] };
  const socket = tlsConnect({ ...clientTlsOptions(o.tls.tls), ...alpn, socket: raw });
  const left = o.timeoutMs === undefined ? undefined : Math.max(1, o.timeoutMs - (performance.now() - started));
  await settle(socket, "secureConnect", o, address, left, aborted, (err) =>
    isTlsFailure(err)
      ? tlsFailureOf(address, err)
      : new ConnectFailedError(address, `TLS with ${address} failed: ${err.message}`, { cause: err }),
  );
  const presented = peerIdentities(socket);
  if (!presented.includes(o.tls.expectIdentity)) {
    socket.destroy();
    throw new PeerIdentityMismatchError(address, o.tls.expectIdentity, presented);
  }
  return socket;
}

/** Wait for `event` on `socket` within `timeoutMs` and the signal; destroys the socket on failure. */
async function settle(
  socket: Socket,
  event: string,
  o: DialOptions,
  address: string,
  timeoutMs: number | undefined,
  aborted: () => Error,
  failed: (err: Error) => Error,
): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      const timer =
        timeoutMs === undefined ? undefined : setTimeout(() => reject(timedOut(address, o.timeoutMs ?? 0)), timeoutMs);
      const onAbort = (): void => reject(aborted());
      o.signal?.addEventListener("abort", onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        o.signal?.removeEventListener("abort", onAbort);
        socket.off("error", onError);
        socket.off("close", onClose);
        socket.off(event, done);
      };
      const onError = (err: Error): void => (cleanup(), reject(failed(err)));
      const onClose = (): void => (cleanup(), reject(failed(new Error("connection closed"))));
      const done = (): void => (cleanup(), resolve());
      socket.on("error", onError);
      socket.on("close", onClose);
      socket.on(event, done);
    });
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/** Who is on the other end of an accepted TLS link (undefined for a plaintext listener). */
export interface PeerIdentity {
  /** Every dwcp identity the peer's certificate names. */
  identities: string[];
  /** The hosts among them (at least one: a peer naming none is refused before the protocol sees it). */
  hosts: string[];
}

export interface ListenTls {
  tls: LinkTls;
  /** Refused handshakes are logged here (warn, with the peer's address and the reason). */
  log: Logger;
  /**
   * Where refusals go instead, shared with the protocol's own pre-auth refusals so that one
   * bound covers the listener. Default: a RefusalLog of its own over `log`.
   */
  refusals?: RefusalLog;
  /** A connection that has not completed its TLS handshake by then is closed. Default 5000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * Protocol revisions this side takes by ALPN, preferred first. A peer that offers none is
   * served as before (its socket's `alpnProtocol` is false).
   */
  alpn?: readonly string[];
}

export interface ListenOptions {
  host: string;
  /** 0 picks a free port (see the returned address). */
  port: number;
  /** Accept sockets paused, for a reader that does not use Node's stream reads. Plaintext only. Default false. */
  pauseOnConnect?: boolean;
  /** Concurrent connections; more are refused. Default: unlimited. */
  maxConnections?: number;
  /** TLS 1.3 with mutual authentication. Default: plaintext (trusted links only). */
  tls?: ListenTls;
}

export interface Listener {
  server: Server;
  address: AddressInfo;
  /** Stop accepting; resolves once every accepted socket has closed. */
  close(): Promise<void>;
}

/**
 * Listens with Nagle off on every accepted socket; with `tls`, `onSocket` sees only peers that
 * completed the handshake with a certificate from the CA naming a dwcp host. Rejects with
 * ListenFailedError.
 */
export async function listen(
  o: ListenOptions,
  onSocket: (socket: Socket, peer: PeerIdentity | undefined) => void,
): Promise<Listener> {
  // Refusals before authentication are anyone's to make: their lines are rate-limited.
  const ownRefusals = o.tls !== undefined && o.tls.refusals === undefined ? new RefusalLog(o.tls.log) : undefined;
  const server =
    o.tls === undefined
      ? createServer({ noDelay: true, pauseOnConnect: o.pauseOnConnect ?? false }, (s) => onSocket(s, undefined))
      : tlsServer(o.tls, o.tls.refusals ?? (ownRefusals as RefusalLog), onSocket);
  if (o.maxConnections !== undefined) server.maxConnections = o.maxConnections;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: o.host, port: o.port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new ListenFailedError(`cannot listen on ${addressOf(o.host, o.port)}: ${message}`, { cause: err });
  }
  return {
    server,
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) =>
        server.close(() => {
          ownRefusals?.close();
          resolve();
        }),
      ),
  };
}

function tlsServer(t: ListenTls, refusals: RefusalLog, onSocket: (socket: Socket, peer: PeerIdentity) => void): Server {
  const server = createTlsServer({
    ...serverTlsOptions(t.tls),
    ...(t.alpn === undefined ? {} : { ALPNProtocols: [...t.alpn] }),
    noDelay: true,
    handshakeTimeout: t.handshakeTimeoutMs ?? 5000,
  });
  const remoteOf = (s: Socket): string => addressOf(s.remoteAddress ?? "?", s.remotePort ?? 0);
  // The raw socket's address: a TLS socket that failed its handshake may no longer know it.
  const remotes = new WeakMap<Socket, string>();
  server.on("connection", (raw: Socket) => remotes.set(raw, remoteOf(raw)));
  const refuse = (socket: TLSSocket, reason: string): void => {
    const raw = (socket as unknown as { _parent?: Socket })._parent ?? socket;
    const remote = remotes.get(raw) ?? remoteOf(socket);
    const peer = raw.remoteAddress ?? remote;
    refusals.refused({
      peer,
      reason,
      msg: "link refused: TLS failed",
      fields: { remote, code: "TLS_HANDSHAKE_FAILED" },
    });
    socket.destroy();
  };
  // Node leaves a socket whose handshake failed or timed out open: the listener must close it.
  server.on("tlsClientError", (err: NodeJS.ErrnoException, socket: TLSSocket) =>
    refuse(socket, err.code ?? err.message),
  );
  server.on("secureConnection", (socket: TLSSocket) => {
    if (!socket.authorized) {
      const why = socket.authorizationError;
      refuse(
        socket,
        `client certificate refused: ${typeof why === "string" ? why : (why?.message ?? "none presented")}`,
      );
      return;
    }
    const identities = peerIdentities(socket);
    const hosts = hostsOf(identities);
    if (hosts.length === 0) {
      refusals.refused({
        peer: socket.remoteAddress ?? "?",
        reason: "the peer's certificate names no dwcp host",
        msg: "link refused: the peer's certificate names no dwcp host",
        fields: { remote: remoteOf(socket), code: "PEER_IDENTITY_MISMATCH", identities: identities.slice(0, 8) },
      });
      socket.destroy();
      return;
    }
    onSocket(socket, { identities, hosts });
  });
  return server;
}
