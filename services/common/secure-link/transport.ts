import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { ConnectAbortedError, ConnectFailedError, ConnectTimeoutError, ListenFailedError } from "./errors.js";

/**
 * The one place dwcp's authenticated links (the mover data channel and the replication link)
 * meet TCP: dial() and listen() hand each protocol a connected socket, and handshake.ts proves
 * the shared key on top of it. TLS/mTLS lands here and nowhere else: dial() becomes
 * tls.connect() and listen() tls.createServer() with the cluster's certificates, the key proof
 * can then bind the TLS exporter, and the mover's native recv path (which reads the raw fd)
 * must step aside for the stream reader, since the kernel would then hold ciphertext.
 */

export function addressOf(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

const timedOut = (address: string, ms: number): ConnectTimeoutError =>
  new ConnectTimeoutError(address, `connecting to ${address} timed out after ${ms} ms`);

export interface DialOptions {
  host: string;
  port: number;
  /** Give up connecting after this long. Default: the kernel's connect timeout. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * A connected socket with Nagle off. Rejects with ConnectTimeoutError, ConnectFailedError or
 * ConnectAbortedError; after it resolves, socket errors are the protocol's to handle.
 */
export async function dial(o: DialOptions): Promise<Socket> {
  const address = addressOf(o.host, o.port);
  const aborted = (): ConnectAbortedError =>
    new ConnectAbortedError(address, `connecting to ${address} was aborted`, { cause: o.signal?.reason });
  if (o.signal?.aborted === true) throw aborted();
  const socket = connect({ host: o.host, port: o.port, noDelay: true });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer =
        o.timeoutMs === undefined
          ? undefined
          : setTimeout(() => reject(timedOut(address, o.timeoutMs ?? 0)), o.timeoutMs);
      const onAbort = (): void => reject(aborted());
      o.signal?.addEventListener("abort", onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        o.signal?.removeEventListener("abort", onAbort);
      };
      socket.once("error", (err) =>
        reject(new ConnectFailedError(address, `cannot connect to ${address}: ${err.message}`, { cause: err })),
      );
      socket.once("connect", resolve);
      for (const ev of ["connect", "error", "close"]) socket.once(ev, cleanup);
    });
  } catch (err) {
    socket.destroy();
    throw err;
  }
  return socket;
}

export interface ListenOptions {
  host: string;
  /** 0 picks a free port (see the returned address). */
  port: number;
  /** Accept sockets paused, for a reader that does not use Node's stream reads. Default false. */
  pauseOnConnect?: boolean;
  /** Concurrent connections; more are refused. Default: unlimited. */
  maxConnections?: number;
}

export interface Listener {
  server: Server;
  address: AddressInfo;
  /** Stop accepting; resolves once every accepted socket has closed. */
  close(): Promise<void>;
}

/** Listens with Nagle off on every accepted socket. Rejects with ListenFailedError. */
export async function listen(o: ListenOptions, onSocket: (socket: Socket) => void): Promise<Listener> {
  const server = createServer({ noDelay: true, pauseOnConnect: o.pauseOnConnect ?? false }, onSocket);
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
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
