import type { Server, Socket } from "node:net";
import { DwcpError } from "#common/errors.js";
import { Admission, peerOf, type AdmissionOptions } from "#common/secure-link/admission.js";
import { deriveKey, NONCE_BYTES, newNonce, PROOF_BYTES, proofMatches, proofOf } from "#common/secure-link/handshake.js";
import { SocketReader } from "#common/secure-link/reader.js";
import { encodeRecord, RecordDecoder, type RecordStep } from "#common/secure-link/records.js";
import { PeerIdentityMismatchError, TlsHandshakeError } from "#common/secure-link/errors.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import {
  closedAfterHandshake,
  dial,
  isCertificateRefusal,
  listen,
  tlsFailureOf,
  type ListenTls,
} from "#common/secure-link/transport.js";
import { hostIdentity } from "#common/pki.js";

// Agent-to-agent link on #common/secure-link, TLS 1.3 with mutual authentication unless run in
// plaintext by explicit choice: the source checks that the agent's certificate names the
// destination host, the agent that the source is a host of the deployment. Inside it, the server
// sends a 32-byte nonce, the client answers with HMAC-SHA256(key, "dwcp-repl-v1" || nonce) where
// key = HMAC-SHA256(DWCP_SECRET, "replication"); then both sides exchange records
// [u32 BE length][u32 BE request id][frame].
// Requests run concurrently at the server and replies carry their id, so several chunks are in
// flight on one socket.

/** Largest frame accepted before anything is allocated: a 64 MiB chunk plus its header. */
export const MAX_FRAME_BYTES = 65 * 1024 * 1024;

export class LinkError extends DwcpError {
  readonly code = "REPLICATION_LINK" as const;
  readonly retryable = true;
}

const LABEL = "dwcp-repl-v1";
const keyOf = (secret: string): Buffer => deriveKey(secret, "replication");
/** Buffered before the socket is paused: a whole record may be needed at once. */
const HIGH_WATER = 2 * MAX_FRAME_BYTES;

function readerOf(socket: Socket, preambleBytes: number, where = "replication link"): SocketReader<RecordStep> {
  return new SocketReader<RecordStep>(socket, new RecordDecoder(MAX_FRAME_BYTES, preambleBytes), {
    highWaterBytes: HIGH_WATER,
    violation: (m) => new LinkError(m),
    // A (non-Node) agent that refuses our certificate says so with an alert on the first read.
    mapSocketError: (err) => (isCertificateRefusal(err) ? tlsFailureOf(where, err) : err),
  });
}

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.length);

function writeRecord(socket: Socket, id: number, frame: Uint8Array): void {
  for (const part of encodeRecord(id, frame)) socket.write(part);
}

/** Serves clients that prove they know the secret, each connection with its own `session()` handler. */
export async function serve(
  session: () => (frame: Buffer) => Promise<Buffer>,
  o: {
    host: string;
    port: number;
    secret: string;
    /** TLS 1.3 with mutual authentication (refusals and accepted hosts are logged). Absent: plaintext. */
    tls?: ListenTls;
    admission?: AdmissionOptions;
  },
): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const key = keyOf(o.secret);
  // Unauthenticated connections have their own small budget and a deadline (admission.ts).
  const admission = new Admission(o.admission);
  const listener = await listen({ host: o.host, port: o.port, ...(o.tls ? { tls: o.tls } : {}) }, (socket, peer) => {
    if (peer !== undefined)
      o.tls?.log.info({ remote: `${socket.remoteAddress}:${socket.remotePort}`, peerHosts: peer.hosts }, "agent link");
    socket.on("error", () => socket.destroy());
    const ticket = admission.admit(peerOf(socket), () => socket.destroy());
    socket.once("close", () => ticket.release());
    serveSocket(socket, key, session(), () => ticket.authenticated()).catch(() => socket.destroy());
  });
  return { server: listener.server, port: listener.address.port, close: () => listener.close() };
}

async function serveSocket(
  socket: Socket,
  key: Buffer,
  handle: (frame: Buffer) => Promise<Buffer>,
  onAuthenticated: () => void,
): Promise<void> {
  const nonce = newNonce();
  socket.write(nonce);
  const reader = readerOf(socket, PROOF_BYTES);
  const proof = await reader.next();
  if (proof.kind !== "preamble" || !proofMatches(proofOf(key, [LABEL, nonce]), proof.bytes)) {
    socket.destroy();
    return;
  }
  onAuthenticated();
  for await (const step of reader) {
    if (step.kind !== "record") throw new LinkError("unexpected preamble");
    // The frame is a view of buffers this socket handed over (or one copy of them): nothing
    // writes to them again, so the handler may keep it without a copy.
    handle(asBuffer(step.payload)).then(
      (reply) => socket.writable && writeRecord(socket, step.id, reply),
      () => socket.destroy(),
    );
  }
}

/** A Transport over one authenticated socket; a broken link fails every pending request. */
export async function connectAgent(o: {
  host: string;
  port: number;
  secret: string;
  /**
   * TLS 1.3 with mutual authentication: this host's material, and the destination host whose
   * certificate the agent must present (else PeerIdentityMismatchError). Absent: plaintext.
   */
  tls?: { tls: LinkTls; destHost: string };
  /** Give up connecting (TCP and TLS) after this long. Default 10000 ms. */
  timeoutMs?: number;
}): Promise<{ request(frame: Buffer): Promise<Buffer>; close(): Promise<void> }> {
  const where = `replication link to ${o.host}:${o.port}`;
  const tls = o.tls && { tls: o.tls.tls, expectIdentity: hostIdentity(o.tls.destHost) };
  let socket: Socket;
  try {
    socket = await dial({ host: o.host, port: o.port, timeoutMs: o.timeoutMs ?? 10_000, ...(tls ? { tls } : {}) });
  } catch (err) {
    if (err instanceof TlsHandshakeError || err instanceof PeerIdentityMismatchError) throw err;
    throw new LinkError(`${where} failed: ${(err as Error).message}`, { cause: err });
  }
  const pending = new Map<number, { resolve(b: Buffer): void; reject(e: Error): void }>();
  let failure: Error | undefined;
  const fail = (err: Error): void => {
    failure ??= new LinkError(`${where} failed: ${err.message}`, { cause: err });
    for (const p of pending.values()) p.reject(failure);
    pending.clear();
  };
  socket.on("error", fail);
  socket.on("close", () => fail(new LinkError("connection closed")));
  const reader = readerOf(socket, NONCE_BYTES, where);
  const challenge = await reader.next().catch((err: unknown) => {
    socket.destroy();
    if (err instanceof TlsHandshakeError) throw err;
    throw new LinkError(`${where} failed: ${(err as Error).message}`, { cause: err });
  });
  if (challenge.kind !== "preamble") {
    socket.destroy();
    if (tls !== undefined) throw closedAfterHandshake(where);
    throw new LinkError(`${where} closed before its challenge`);
  }
  socket.write(proofOf(keyOf(o.secret), [LABEL, challenge.bytes]));
  void (async () => {
    for await (const step of reader) {
      if (step.kind !== "record") continue;
      const p = pending.get(step.id);
      pending.delete(step.id);
      p?.resolve(Buffer.from(step.payload));
    }
  })().catch((err: unknown) => {
    fail(err as Error);
    socket.destroy();
  });
  let nextId = 1;
  return {
    request(frame) {
      if (failure) return Promise.reject(failure);
      const id = nextId++ >>> 0;
      return new Promise<Buffer>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        writeRecord(socket, id, frame);
      });
    },
    close: () => new Promise<void>((r) => socket.end(() => r())),
  };
}
