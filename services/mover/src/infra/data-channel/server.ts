import type { Socket } from "node:net";
import { metrics } from "#common/metrics/registry.js";
import { ConfigError } from "#common/errors.js";
import { Admission, peerOf, type AdmissionOptions, type AdmissionTicket } from "#common/secure-link/admission.js";
import { newNonce } from "#common/secure-link/handshake.js";
import { ListenFailedError } from "#common/secure-link/errors.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import { RefusalLog, type RefusalLimits } from "#common/secure-link/refusal-log.js";
import { listen, type PeerIdentity } from "#common/secure-link/transport.js";
import type { Logger } from "#common/logger.js";
import { formatAddress } from "../../domain/data-channel/address.js";
import { helloNonce, verifyHelloMac } from "../../domain/data-channel/auth.js";
import { FrameDecoder, SERVER_IDLE, SERVER_PREAUTH, SERVER_TUNNEL } from "../../domain/data-channel/decoder.js";
import { FenceTable } from "../../domain/data-channel/fence.js";
import { AuthFailedError, ProtocolError } from "../../errors.js";
import { releaseRoots, resolveRoots } from "../volume-paths.js";
import { BufferPool } from "./buffer-pool.js";
import { SocketFrameReader, stopReading, type FrameReader } from "./frame-reader.js";
import { NativeFrameReader } from "./native-frame-reader.js";
import { sealed, socketFd, zeroCopy } from "#native/index.js";
import type { TLSSocket } from "node:tls";
import { DATA_ALPN } from "../../domain/data-channel/frames.js";
import { BaseSumsJobs } from "./base-sums-job.js";
import { exportedNonce, speaks11 } from "./revision.js";
import { exportSealKeys, SEALED_LABEL_CLIENT_TO_SERVER } from "#common/secure-link/sealed.js";
import { SealedFrameReader } from "./sealed-link.js";
import type { SendBatchOptions, SendBatchResult } from "./client.js";
import { copyBatchLocally } from "./local-copy.js";
import { tuneSocket } from "./socket-tuning.js";
import { serveTunnel, TunnelTable } from "./tunnel.js";
import { messageOf, receiveBatch, send, wireCode, type BatchHolder } from "./server-batch.js";

export interface DataServerOptions {
  /** This mover's host id; goes into every log line. */
  host: string;
  /** Interface to bind, e.g. "0.0.0.0" or "127.0.0.1". */
  listenHost: string;
  /** TCP port; 0 picks a free one (see the returned address). */
  listenPort: number;
  /** Cluster secret the per-migration tokens derive from. Never logged. */
  secret: Buffer;
  /**
   * TLS 1.3 with mutual authentication: senders must present a certificate from the CA naming
   * the host their HELLO claims; others are refused and logged. Receives through Node's stream
   * reads (the native recv would see ciphertext). Absent: plaintext (trusted links only).
   */
  tls?: LinkTls;
  /** Directories destination files may be written under (symlinks resolved here). */
  roots: string[];
  log: Logger;
  /** Concurrent authenticated connections; more are refused by the kernel backlog. Default 64. */
  maxConnections?: number;
  /** A connection that has not authenticated within this time is closed. Default 5000 ms. */
  helloTimeoutMs?: number;
  /**
   * Budget of connections not yet authenticated, apart from the authenticated ones (see
   * #common/secure-link/admission.ts). Default 256 in all, 128 per peer address.
   */
  admission?: Omit<AdmissionOptions, "handshakeTimeoutMs">;
  /** How refusals before authentication are rate-limited in the log (refusal-log.ts). Default: its defaults. */
  refusalLog?: Partial<RefusalLimits>;
  /** An authenticated connection with no traffic for this long is closed. Default 120000 ms. */
  idleTimeoutMs?: number;
  /** Chunk-size buffers per connection (chunks verified and written concurrently). Default 4. */
  buffersPerConnection?: number;
  /**
   * Receive with native recv(2) straight into chunk buffers (zero-copy path). Default: whenever
   * the native module is loaded; false forces Node's stream reads (the mover's config maps
   * DWCP_NATIVE_RECV=off to false).
   */
  nativeRecv?: boolean;
}

/** Default chunk-size buffers per receiving connection. */
export const BUFFERS_PER_CONNECTION = 4;

export interface DataServer {
  /** host:port actually bound. */
  address: string;
  /** Stop listening, cut open connections (their batches are redelivered) and wait for them. */
  close(): Promise<void>;
  /**
   * Copy a batch whose destination is this server's own mover without the socket (see
   * local-copy.ts), under the same roots and fence table as the batches it receives.
   */
  copyLocal(o: SendBatchOptions): Promise<SendBatchResult>;
  /** The live migrations whose tunnels this server accepts, and where each channel leads (tunnel.ts). */
  tunnels: TunnelTable;
}

interface ServerConfig {
  secret: Buffer;
  roots: string[];
  helloTimeoutMs: number;
  idleTimeoutMs: number;
  buffersPerConnection: number;
  fences: FenceTable<BatchHolder>;
  /** Receive with native recv(2) into chunk buffers (see sessionReader). */
  nativeRecv: boolean;
  /** On TLS: accept a sender's offer of sealed records (see sealedReader). */
  sealedRecv: boolean;
  /** Where connections refused before they authenticated are logged (rate-limited). */
  refusals?: RefusalLog;
  /** The incremental migrations' base digests sent ahead (revision 1.1, base-sums-job.ts). */
  sums: BaseSumsJobs;
  tunnels: TunnelTable;
}

/** A connection refused before it authenticated: one rate-limited line (refusal-log.ts). */
function refused(cfg: ServerConfig, socket: Socket, reason: string, fields: Record<string, unknown>): void {
  metrics.dataConnections.inc({ outcome: "refused" });
  const remote = formatAddress(socket.remoteAddress ?? "?", socket.remotePort ?? 0);
  cfg.refusals?.refused({
    peer: socket.remoteAddress ?? "?",
    reason,
    msg: "data connection refused before authentication",
    fields: { remote, ...fields },
  });
}

/** Start the destination side of the data channel. Resolves once it is listening. */
export async function startDataServer(opts: DataServerOptions): Promise<DataServer> {
  const roots = await resolveRoots(opts.roots);
  const cfg: ServerConfig = {
    secret: opts.secret,
    roots,
    helloTimeoutMs: opts.helloTimeoutMs ?? 5000,
    idleTimeoutMs: opts.idleTimeoutMs ?? 120_000,
    buffersPerConnection: opts.buffersPerConnection ?? BUFFERS_PER_CONNECTION,
    fences: new FenceTable<BatchHolder>(),
    nativeRecv: zeroCopy.available && (opts.nativeRecv ?? true) && opts.tls === undefined,
    sealedRecv: sealed.available && (opts.nativeRecv ?? true) && opts.tls !== undefined,
    tunnels: new TunnelTable(),
    sums: new BaseSumsJobs(roots),
  };
  const log = opts.log.child({ host: opts.host, component: "data-server" });
  const connections = new Map<Socket, Connection>();
  const admission = new Admission({ ...opts.admission, handshakeTimeoutMs: cfg.helloTimeoutMs });
  // Connections refused before they authenticated (TLS, HELLO, admission) share one rate-limited log.
  const refusals = new RefusalLog(log, opts.refusalLog);
  cfg.refusals = refusals;
  const onSocket = (socket: Socket, peer: PeerIdentity | undefined): void => {
    const conn: Connection = { reader: preAuthReader(socket, cfg), done: Promise.resolve(), authenticated: false };
    const ticket = admission.admit(peerOf(socket), (reason) => conn.reader.abort(new ProtocolError(reason)));
    conn.done = serveConnection(socket, conn, peer, cfg, log, ticket)
      .catch((err: unknown) => {
        if (conn.authenticated) log.warn({ err }, "data connection failed");
        else refused(cfg, socket, messageOf(err), { code: wireCode(err) });
      })
      .finally(async () => {
        ticket.release();
        await cut(socket, conn.reader, "connection closed");
        connections.delete(socket);
      });
    connections.set(socket, conn);
  };
  const listening = {
    host: opts.listenHost,
    port: opts.listenPort,
    pauseOnConnect: cfg.nativeRecv,
    tls: opts.tls && { tls: opts.tls, log, refusals, handshakeTimeoutMs: cfg.helloTimeoutMs, alpn: [DATA_ALPN] },
  };
  // Pending connections have their own budget on top of the sessions': they never take a session's place.
  const maxConnections = (opts.maxConnections ?? 64) + admission.limits.maxPending;
  const listener = await listen({ ...listening, maxConnections }, onSocket).catch((err: unknown) => {
    releaseRoots(cfg.roots);
    const where = formatAddress(opts.listenHost, opts.listenPort);
    throw new ConfigError([
      `data channel cannot listen on ${where}: ${messageOf(err instanceof ListenFailedError ? err.cause : err)}`,
    ]);
  });
  const address = formatAddress(listener.address.address, listener.address.port);
  log.info({ address, tls: opts.tls !== undefined, nativeRecv: cfg.nativeRecv }, "data channel listening");
  return {
    address,
    tunnels: cfg.tunnels,
    copyLocal: (o) => copyBatchLocally({ roots: cfg.roots, fences: cfg.fences, log }, o),
    close: async () => {
      const closed = listener.close();
      await Promise.allSettled(
        [...connections.entries()].map(([socket, { reader }]) => cut(socket, reader, "data channel closing")),
      );
      await Promise.allSettled([...connections.values()].map((c) => c.done));
      await closed;
      refusals.close();
      releaseRoots(cfg.roots);
      log.info({ address }, "data channel closed");
    },
  };
}

/** A data connection and whoever reads it now (Node's stream reads until authenticated, then maybe native recv). */
interface Connection {
  reader: FrameReader;
  done: Promise<void>;
  /** The HELLO was verified: failures from here on are the session's, logged in full. */
  authenticated: boolean;
}

/** Stop the reader, wait until no native recv can still touch the fd, then close the socket. */
async function cut(socket: Socket, reader: FrameReader, reason: string): Promise<void> {
  reader.abort(new ProtocolError(reason));
  await reader.idle();
  socket.destroy();
}

/**
 * Until a peer has authenticated it is read with Node's stream reads, which cost an fd and a
 * small buffer but no libuv pool thread (a native recv holds one while it waits): idle
 * unauthenticated connections must not be able to starve the pool the sessions' reads, checksums
 * and writes run on.
 */
function preAuthReader(socket: Socket, cfg: ServerConfig): FrameReader {
  if (cfg.nativeRecv) socket.resume();
  return new SocketFrameReader(socket, new FrameDecoder(SERVER_PREAUTH));
}

/**
 * After AUTH_OK: native recv straight into chunk buffers when the module is loaded, else the same
 * stream reader. The peer sends nothing between HELLO and our AUTH_OK, so pausing the socket here
 * leaves no byte behind in Node's buffers (one that is there is a protocol violation).
 * nativeRecv: false forces the stream reads (for comparisons).
 */
function sessionReader(socket: Socket, reader: FrameReader, cfg: ServerConfig): FrameReader {
  const fd = cfg.nativeRecv ? socketFd(socket) : undefined;
  if (fd === undefined) return reader;
  stopReading(socket);
  if (reader.decoder.buffered > 0 || socket.readableLength > 0) throw new ProtocolError("data sent before AUTH_OK");
  reader.detach();
  return new NativeFrameReader(socket, fd, reader.decoder, { idleTimeoutMs: cfg.idleTimeoutMs });
}

/**
 * On a TLS link whose sender offered sealed records: stop Node's TLS reads before AUTH_OK tells
 * the sender to switch (the sender writes nothing between HELLO and reading AUTH_OK, so nothing
 * of it sits in TLS's buffers; a byte there is a protocol violation), and read sealed records
 * under the key the TLS session exports for the sender's direction, bound to this challenge.
 */
function sealedReader(socket: Socket, reader: FrameReader, cfg: ServerConfig, nonce: Uint8Array): FrameReader {
  const fd = socketFd(socket);
  if (fd === undefined) throw new ProtocolError("data channel socket closed during authentication");
  stopReading(socket);
  if (reader.decoder.buffered > 0 || socket.readableLength > 0) throw new ProtocolError("data sent before AUTH_OK");
  reader.detach();
  const keys = exportSealKeys(socket as TLSSocket, SEALED_LABEL_CLIENT_TO_SERVER, nonce);
  return new SealedFrameReader(socket, fd, reader.decoder, keys, { idleTimeoutMs: cfg.idleTimeoutMs });
}

async function serveConnection(
  socket: Socket,
  conn: Connection,
  peer: PeerIdentity | undefined,
  cfg: ServerConfig,
  parentLog: Logger,
  ticket: AdmissionTicket,
): Promise<void> {
  const log = parentLog.child({ remote: formatAddress(socket.remoteAddress ?? "?", socket.remotePort ?? 0) });
  // The reader reports socket errors; this keeps a late one (after detach) from being fatal.
  socket.on("error", (err) => log.debug({ err }, "data socket error"));
  const auth = await authenticate(socket, conn, peer, cfg, log);
  if (auth === undefined) return;
  conn.authenticated = true;
  metrics.dataConnections.inc({ outcome: "authenticated" });
  ticket.authenticated();
  const reader = conn.reader;
  const sessionLog = (hello: Hello): Logger =>
    log.child({ migrationId: hello.migrationId, sourceHost: hello.sourceHost, tls: peer !== undefined });
  sessionLog(auth.hello).info({ ...tuneSocket(socket, undefined, log) }, "data link accepted");
  // A native reader times out inside recv (Node sees none of its reads, only our replies).
  if (reader instanceof SocketFrameReader) {
    socket.setTimeout(cfg.idleTimeoutMs, () =>
      reader.abort(new ProtocolError(`no traffic for ${cfg.idleTimeoutMs} ms`)),
    );
  }
  if (auth.tunnel) {
    const close = (): Promise<void> => lingerClose(socket, reader);
    const sealing = {
      accept: peer !== undefined && cfg.sealedRecv,
      nonce: auth.nonce,
      reader: (r: FrameReader) => (conn.reader = r),
    };
    await serveTunnel(socket, reader, cfg.tunnels, auth.hello, log, close, sealing);
    return;
  }
  const pool = new BufferPool(cfg.buffersPerConnection);
  try {
    await serveBatches(socket, reader, cfg, { ...auth, peer, sessionLog }, pool);
  } finally {
    pool.dispose();
  }
}

type Hello = { migrationId: string; sourceHost: string };

/** What a connection authenticated: the migration whose batches it may carry, and how to re-authenticate. */
interface Session {
  hello: Hello;
  /**
   * The connection's CHALLENGE nonce, or on revision 1.1 the TLS session's exported one (each
   * later HELLO answers a nonce derived from it).
   */
  nonce: Uint8Array;
  peer: PeerIdentity | undefined;
  sessionLog: (hello: Hello) => Logger;
}

async function serveBatches(
  socket: Socket,
  reader: FrameReader,
  cfg: ServerConfig,
  session: Session,
  pool: BufferPool,
): Promise<void> {
  let hello = session.hello;
  let log = session.sessionLog(hello);
  let hellos = 0;
  // The base sums this link is sent (one volume of the link's migration at a time).
  let sums: { key: string; leave: () => void } | undefined;
  const leaveSums = (): void => {
    sums?.leave();
    sums = undefined;
  };
  try {
    for (;;) {
      // A kept link's reader waits for the next batch on the event loop, not in a pool thread (PoolFrameReader).
      const step = await reader.next();
      if (step.kind === "end") return;
      if (step.kind === "frame" && step.frame.kind === "HELLO") {
        if (step.frame.tunnel === true) throw new ProtocolError("a batch link cannot become a tunnel");
        // A kept link moves on to another migration: the HELLO answers this connection's next nonce.
        hellos += 1;
        const refusal = helloRefusal(cfg, helloNonce(session.nonce, hellos), step.frame, session.peer);
        if (refusal !== undefined) {
          log.warn(
            { code: refusal.code, claimed: step.frame.migrationId },
            `re-authentication refused: ${refusal.reason}`,
          );
          send(socket, { kind: "AUTH_FAIL", message: `authentication failed: ${refusal.message}` });
          await lingerClose(socket, reader);
          return;
        }
        // Nothing of the last migration's base follows the AUTH_OK.
        leaveSums();
        hello = { migrationId: step.frame.migrationId, sourceHost: step.frame.sourceHost };
        log = session.sessionLog(hello);
        log.debug("data link re-authenticated");
        send(socket, { kind: "AUTH_OK" });
        continue;
      }
      if (step.kind !== "frame" || step.frame.kind !== "BATCH_BEGIN") throw new ProtocolError("expected BATCH_BEGIN");
      const begin = step.frame.begin;
      const batchLog = log.child({ batch: begin.batch, attempt: begin.attempt, destName: begin.destName });
      try {
        if (begin.baseSums !== undefined) {
          // Only the link's own migration's base: checked here, before anything of it is read.
          if (begin.migrationId !== hello.migrationId)
            throw new AuthFailedError(
              `this connection is authenticated for migration ${hello.migrationId}, not ${begin.migrationId}`,
            );
          if (begin.incremental !== true || !speaks11(socket))
            throw new ProtocolError("BATCH_BEGIN: baseSums needs an incremental batch on a dwcp/1.1 link");
          const key = `${begin.baseSums}\0${begin.destDir}\0${begin.destName}`;
          if (sums?.key !== key) {
            leaveSums();
            sums = { key, leave: cfg.sums.subscribe(begin, begin.baseSums, socket, batchLog) };
          }
        }
        await receiveBatch(
          { socket, reader, roots: cfg.roots, pool, migrationId: hello.migrationId, fences: cfg.fences, log: batchLog },
          begin,
        );
        batchLog.info({ chunks: begin.chunkCount }, "batch received and synced");
      } catch (err) {
        if (wireCode(err) === "FENCED")
          batchLog.warn({ code: "FENCED", reason: messageOf(err) }, "batch refused: a newer sender holds it");
        else batchLog.warn({ err }, "batch failed");
        send(socket, { kind: "BATCH_ERR", failure: { code: wireCode(err), message: messageOf(err) } });
        await lingerClose(socket, reader);
        return;
      }
    }
  } finally {
    leaveSums();
  }
}

/**
 * Why a HELLO answering `nonce` is refused, or undefined: its MAC must prove the cluster secret
 * for its migration, and a TLS peer's certificate must name the host it speaks for.
 */
function helloRefusal(
  cfg: ServerConfig,
  nonce: Uint8Array,
  hello: Hello & { mac: Uint8Array },
  peer: PeerIdentity | undefined,
): { code: string; reason: string; message: string } | undefined {
  if (!verifyHelloMac(cfg.secret, nonce, hello)) {
    const reason = "data channel authentication failed";
    return { code: "AUTH_FAILED", reason, message: "check the cluster secret" };
  }
  // The certificate proved a host of the deployment; it must be the host the HELLO speaks for.
  if (peer !== undefined && !peer.hosts.includes(hello.sourceHost)) {
    const reason = `the sender's certificate names host ${peer.hosts.join(", ")}, its HELLO claims ${hello.sourceHost}`;
    return { code: "PEER_IDENTITY_MISMATCH", reason, message: reason };
  }
  return undefined;
}

/**
 * CHALLENGE → HELLO → AUTH_OK (revision 1.1: HELLO → AUTH_OK). Undefined (connection answered and
 * closing) if it failed.
 */
async function authenticate(
  socket: Socket,
  conn: Connection,
  peer: PeerIdentity | undefined,
  cfg: ServerConfig,
  log: Logger,
): Promise<{ hello: Hello; nonce: Uint8Array; tunnel: boolean } | undefined> {
  const reader = conn.reader;
  // Revision 1.1: the HELLO answers the TLS session's exported nonce, sent without a CHALLENGE.
  const exported = speaks11(socket);
  const nonce = exported ? exportedNonce(socket as TLSSocket) : newNonce();
  if (!exported) send(socket, { kind: "CHALLENGE", nonce });
  const timer = setTimeout(
    () => reader.abort(new ProtocolError(`no HELLO within ${cfg.helloTimeoutMs} ms`)),
    cfg.helloTimeoutMs,
  );
  let step;
  try {
    step = await reader.next();
  } finally {
    clearTimeout(timer);
  }
  if (step.kind === "end") return undefined;
  if (step.kind !== "frame" || step.frame.kind !== "HELLO") throw new ProtocolError("expected HELLO");
  const hello = step.frame;
  const refusal = helloRefusal(cfg, nonce, hello, peer);
  if (refusal !== undefined) {
    refused(cfg, socket, refusal.reason, {
      code: refusal.code,
      migrationId: hello.migrationId,
      ...(refusal.code === "AUTH_FAILED" ? { sourceHost: hello.sourceHost } : { peerHosts: peer?.hosts }),
    });
    send(socket, { kind: "AUTH_FAIL", message: `authentication failed: ${refusal.message}` });
    await lingerClose(socket, reader);
    return undefined;
  }
  if (peer !== undefined) log.debug({ migrationId: hello.migrationId, peerHosts: peer.hosts }, "sender authenticated");
  const hello0 = { migrationId: hello.migrationId, sourceHost: hello.sourceHost };
  if (hello.tunnel === true) {
    // A tunnel is read by Node's streams until TUNNEL_OPEN (which may offer sealed records).
    reader.decoder.setLimits(SERVER_TUNNEL);
    send(socket, { kind: "AUTH_OK" });
    return { hello: hello0, nonce, tunnel: true };
  }
  reader.decoder.setLimits(SERVER_IDLE);
  const seal = peer !== undefined && hello.sealed === true && cfg.sealedRecv;
  conn.reader = seal ? sealedReader(socket, reader, cfg, nonce) : sessionReader(socket, reader, cfg);
  send(socket, { kind: "AUTH_OK", sealed: seal });
  return { hello: hello0, nonce, tunnel: false };
}

/** Discard what arrives on `fd` until the peer closes, the socket closes, or `ms` passes. */
async function drainRaw(socket: Socket, fd: number, ms: number): Promise<void> {
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const onClose = (): void => {
    Atomics.store(cancel, 0, 1);
  };
  socket.once("close", onClose);
  const scratch = Buffer.allocUnsafe(64 * 1024);
  const until = performance.now() + ms;
  try {
    for (let left = ms; left > 0 && !socket.destroyed; left = Math.floor(until - performance.now())) {
      if ((await zeroCopy.recv(fd, scratch, 0, 1, scratch.length, left, cancel)) === 0) return;
    }
  } catch {
    // timed out, cancelled or reset: the answer was given
  } finally {
    socket.off("close", onClose);
  }
}

/**
 * Half-close after a final answer and discard what the peer still sends until it closes (or
 * `ms` passes). Destroying at once could turn our answer into a reset the peer never reads.
 */
async function lingerClose(socket: Socket, reader: FrameReader, ms = 2000): Promise<void> {
  await reader.idle();
  reader.detach();
  if (socket.closed) return;
  socket.setTimeout(0);
  // Node's TLS must not read sealed records: they are discarded natively instead.
  if (reader instanceof SealedFrameReader) {
    socket.end();
    await drainRaw(socket, reader.fd, ms);
    return;
  }
  socket.on("data", () => undefined);
  socket.resume();
  socket.end();
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
