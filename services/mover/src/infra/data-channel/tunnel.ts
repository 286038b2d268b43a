import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import type { Transform } from "node:stream";
import { rmSync } from "node:fs";
import { TLSSocket } from "node:tls";
import { hostIdentity } from "#common/pki.js";
import { silentLogger, type Logger } from "#common/logger.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import { dial } from "#common/secure-link/transport.js";
import { DwcpError } from "#common/errors.js";
import { compressionCodec, sealed, type SealKeys } from "#native/index.js";
import { exportSealKeys, SEALED_LABEL_CLIENT_TO_SERVER } from "#common/secure-link/sealed.js";
import type { CompressionMode } from "#schemas/index.js";
import type { CompressionChoice } from "../../domain/data-channel/compression.js";
import { parseAddress } from "../../domain/data-channel/address.js";
import { helloMac, migrationToken } from "../../domain/data-channel/auth.js";
import { CLIENT_PREAUTH, CLIENT_TUNNEL, FrameDecoder } from "../../domain/data-channel/decoder.js";
import { encodeControl } from "../../domain/data-channel/frames.js";
import { AuthFailedError, DestinationUnreachableError, ProtocolError } from "../../errors.js";
import { SocketFrameReader, stopReading, type FrameReader } from "./frame-reader.js";
import { compressionHere } from "./compression-here.js";
import { tuneSocket } from "./socket-tuning.js";
import { BlockCompressor, BlockDecompressor } from "./tunnel-codec.js";
import { PumpGuard, sealedSplice, type Carried } from "./sealed-tunnel.js";

// Tunnels: a data-channel connection that, after the usual authentication (TLS 1.3 with mutual
// certificates, CHALLENGE, HELLO proving the migration's token), carries one raw byte stream
// between a unix socket at the source mover and one at the destination mover. One connection per
// stream (QEMU's migration channels, multifd's included, and each NBD client each get their own);
// the bytes are never parsed. The destination connects a tunnel only to a socket it registered
// for that migration and source host (TunnelTable): the HMAC proves who may speak for a
// migration, the table says which live migrations this mover was told to expect.
//
//   source                                   destination
//   ← CHALLENGE
//   → HELLO (FLAG_TUNNEL)
//   ← AUTH_OK
//   → TUNNEL_OPEN {channel} [FLAG_SEALED: offer sealed records]
//   ← TUNNEL_OK [FLAG_SEALED: switched] | TUNNEL_ERR {message}
//   ⇄ raw bytes (each direction ends with its own half-close)
//
// A raw tunnel on TLS offers sealed records, and a destination with the native module takes
// the offer: the source → destination bytes then go as records a native thread at each end
// seals and opens (sealed-tunnel.ts), ending with an empty record; the other direction stays
// in TLS. The destination stops its TLS reads before TUNNEL_OK, and the source writes nothing
// between TUNNEL_OPEN and reading it (#common/secure-link/sealed.ts, the same switch as a
// batch link's). Otherwise both directions are spliced through Node's streams.
//
// On a WAN link the source compresses: TUNNEL_OPEN then names a codec (chosen as a batch's is,
// from the connection's RTT and the spare cores; none on a local link) and the source →
// destination bytes travel as blocks (domain/data-channel/tunnel-blocks.ts) that the
// destination decodes before its unix socket sees them. The other direction stays raw.

/** The destination refused a tunnel: no live migration expects this channel, or its socket is gone. */
export class TunnelRefusedError extends DwcpError {
  readonly code = "TUNNEL_REFUSED";
  readonly retryable = false;
}

interface Expected {
  sourceHost: string;
  channels: ReadonlyMap<string, string>;
}

/** The live migrations a destination mover expects tunnels for, and where each channel leads. */
export class TunnelTable {
  private readonly expected = new Map<string, Expected>();

  /**
   * Accept tunnels of `migrationId` from `sourceHost` to the unix sockets `channels` names
   * (channel → path) until the returned function is called.
   */
  allow(migrationId: string, sourceHost: string, channels: Record<string, string>): () => void {
    const entry: Expected = { sourceHost, channels: new Map(Object.entries(channels)) };
    this.expected.set(migrationId, entry);
    return () => {
      if (this.expected.get(migrationId) === entry) this.expected.delete(migrationId);
    };
  }

  /** The unix socket a tunnel of this migration, from this host, on this channel reaches; undefined: refused. */
  target(migrationId: string, sourceHost: string, channel: string): string | undefined {
    const e = this.expected.get(migrationId);
    if (e === undefined || e.sourceHost !== sourceHost) return undefined;
    return e.channels.get(channel);
  }
}

/** Sends a control frame if the socket still takes writes. */
function sendFrame(socket: Socket, frame: Parameters<typeof encodeControl>[0]): void {
  if (!socket.destroyed && socket.writable) socket.write(encodeControl(frame));
}

/**
 * Copies bytes both ways between `a` and `b` until both directions ended (each side's end is
 * passed on as a half-close) or one failed (then both are destroyed). `aToB`, when given, is a
 * Transform the bytes from `a` pass through on their way (a compressed tunnel's codec). Resolves
 * with the bytes carried each way, as read from `a` and from `b`.
 */
export function splice(a: Socket, b: Socket, aToB?: Transform): Promise<{ aToB: number; bToA: number }> {
  a.allowHalfOpen = true;
  b.allowHalfOpen = true;
  const counts = { aToB: 0, bToA: 0 };
  a.on("data", (d: Buffer) => (counts.aToB += d.length));
  b.on("data", (d: Buffer) => (counts.bToA += d.length));
  return new Promise((resolve) => {
    let closed = 0;
    const onClose = (): void => {
      closed += 1;
      if (closed === 2) resolve(counts);
    };
    const fail = (): void => {
      aToB?.destroy();
      a.destroy();
      b.destroy();
    };
    a.once("close", onClose);
    b.once("close", onClose);
    a.on("error", fail);
    b.on("error", fail);
    aToB?.on("error", fail);
    // A side that closed after its bytes ended was passed on (to the codec and from it to the
    // other side) closed cleanly; one that closed before takes the other with it.
    a.once("close", () => a.readableEnded || b.destroy());
    b.once("close", () => b.readableEnded || a.destroy());
    if (aToB === undefined) a.pipe(b);
    else a.pipe(aToB).pipe(b);
    b.pipe(a);
    a.resume();
    b.resume();
  });
}

/** A pump stopped by a forged or truncated record, or by a link that failed under it (not by us): a warning. */
function warnIfCut(carried: Carried, log: Logger): void {
  const err = carried.pumpError;
  if (err !== undefined && (err as { sysCode?: string }).sysCode !== "ECANCELED")
    log.warn({ err }, "sealed tunnel cut");
}

/**
 * Destination side: serve a connection whose HELLO asked for a tunnel. Reads TUNNEL_OPEN, checks
 * the table, connects to the channel's unix socket and splices; a refusal is TUNNEL_ERR and a
 * logged warning. `reader` is the connection's stream reader. With `sealing.accept` (a TLS link
 * and the native module) an offer of sealed records is taken: the connection's reader becomes a
 * PumpGuard (handed to `sealing.reader`), so the server's cut stops the pump before it closes.
 */
export async function serveTunnel(
  socket: Socket,
  reader: FrameReader,
  tunnels: TunnelTable,
  hello: { migrationId: string; sourceHost: string },
  log: Logger,
  close: () => Promise<void>,
  sealing: { accept: boolean; nonce: Uint8Array; reader: (r: FrameReader) => void } = {
    accept: false,
    nonce: new Uint8Array(0),
    reader: () => undefined,
  },
): Promise<void> {
  const step = await reader.next();
  if (step.kind === "end") return;
  if (step.kind !== "frame" || step.frame.kind !== "TUNNEL_OPEN") throw new ProtocolError("expected TUNNEL_OPEN");
  const { channel, codec } = step.frame;
  const seal = step.frame.sealed === true && codec === undefined && sealing.accept && socket instanceof TLSSocket;
  const tlog = log.child({ migrationId: hello.migrationId, sourceHost: hello.sourceHost, channel });
  const path = tunnels.target(hello.migrationId, hello.sourceHost, channel);
  if (codec !== undefined && (await compressionCodec(codec)) !== codec) {
    const message = `this mover cannot decode ${codec} (its native module or package is missing)`;
    tlog.warn({ code: "TUNNEL_REFUSED", codec }, `tunnel refused: ${message}`);
    sendFrame(socket, { kind: "TUNNEL_ERR", message });
    await close();
    return;
  }
  if (path === undefined) {
    const who = `${hello.migrationId} from ${hello.sourceHost}`;
    const message = `no live migration ${who} expects a tunnel on channel ${channel}`;
    tlog.warn({ code: "TUNNEL_REFUSED" }, `tunnel refused: ${message}`);
    sendFrame(socket, { kind: "TUNNEL_ERR", message });
    await close();
    return;
  }
  let local: Socket;
  try {
    local = await connectUnix(path);
  } catch (err) {
    tlog.warn({ err, code: "TUNNEL_REFUSED" }, "tunnel refused: its socket does not answer");
    sendFrame(socket, { kind: "TUNNEL_ERR", message: `the ${channel} socket does not answer` });
    await close();
    return;
  }
  // The sender writes nothing between TUNNEL_OPEN and our TUNNEL_OK: a byte buffered here is a violation.
  if (reader.decoder.buffered > 0 || socket.readableLength > 0) {
    local.destroy();
    throw new ProtocolError("data sent before TUNNEL_OK");
  }
  await reader.idle();
  reader.detach();
  socket.setTimeout(0);
  socket.setKeepAlive(true, 10_000);
  let guard: PumpGuard | undefined;
  let keys: SealKeys | undefined;
  if (seal) {
    // Node's TLS must read none of the records: it stops before TUNNEL_OK tells the source to switch.
    stopReading(socket);
    if (socket.readableLength > 0) {
      local.destroy();
      throw new ProtocolError("data sent before TUNNEL_OK");
    }
    keys = exportSealKeys(socket, SEALED_LABEL_CLIENT_TO_SERVER, sealing.nonce);
    guard = new PumpGuard(reader.decoder);
    sealing.reader(guard);
  }
  sendFrame(socket, { kind: "TUNNEL_OK", ...(seal && { sealed: true }) });
  tlog.info({ codec: codec ?? "none", sealed: seal }, "tunnel open");
  const carried: Carried =
    keys === undefined
      ? await splice(socket, local, codec === undefined ? undefined : new BlockDecompressor())
      : await sealedSplice(local, socket, keys, "open", (p) => guard?.started(p));
  warnIfCut(carried, tlog);
  tlog.info({ wireBytesIn: carried.aToB, bytesOut: carried.bToA }, "tunnel closed");
}

function connectUnix(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ path, allowHalfOpen: true });
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

export interface TunnelOptions {
  /** Destination mover's data channel, host:port. */
  address: string;
  /** Cluster secret; only a MAC derived from it is sent. */
  secret: Buffer;
  /** TLS 1.3 with mutual authentication, and the host whose certificate the destination must present. */
  tls?: { tls: LinkTls; destHost: string };
  sourceHost: string;
  migrationId: string;
  /** Which of the destination's sockets for the migration to reach (e.g. "nbd", "migration"). */
  channel: string;
  /** Give up connecting and authenticating after this long. Default 10000 ms. */
  connectTimeoutMs?: number;
  /**
   * How the source → destination bytes are compressed: "auto" (the default) chooses from the
   * connection's RTT and the spare cores (nothing on a local link).
   */
  compression?: CompressionMode;
  /** Offer sealed records for a raw tunnel on TLS (the default); false keeps it in Node's TLS. */
  sealed?: boolean;
}

/** An open tunnel: its socket, its round trip and the codec its source → destination bytes take (none: raw). */
export interface OpenTunnel {
  socket: Socket;
  /** The connection's smallest RTT so far (TCP_INFO), µs; undefined without the native module. */
  rttUs: number | undefined;
  compression: CompressionChoice;
  /** Set when the destination switched to sealed records: the key of the source → destination direction. */
  sealKeys?: SealKeys;
}

/**
 * Source side: connect, authenticate for the migration, tune the socket for its link (BBR,
 * buffers; socket-tuning.ts), choose how to compress and open a tunnel on `o.channel`. Resolves
 * with the socket, which from now on carries only the tunnelled bytes (blocks, towards the
 * destination, when a codec was chosen). Rejects with AuthFailedError, TunnelRefusedError or
 * DestinationUnreachableError.
 */
export async function openTunnel(o: TunnelOptions, log: Logger = silentLogger): Promise<OpenTunnel> {
  const target = parseAddress(o.address);
  if (target === undefined) throw new DestinationUnreachableError(`tunnel address must be HOST:PORT, got ${o.address}`);
  const timeoutMs = o.connectTimeoutMs ?? 10_000;
  const tls = o.tls && { tls: o.tls.tls, expectIdentity: hostIdentity(o.tls.destHost) };
  let socket: Socket;
  try {
    socket = await dial({ ...target, timeoutMs, tls });
  } catch (err) {
    if (err instanceof DwcpError && !err.retryable) throw err;
    throw new DestinationUnreachableError((err as Error).message, { cause: err });
  }
  socket.allowHalfOpen = true;
  socket.on("error", () => undefined); // reported through the reader until the splice takes over
  const reader = new SocketFrameReader(socket, new FrameDecoder(CLIENT_PREAUTH), {
    mapSocketError: (err) => new DestinationUnreachableError(`tunnel to ${o.address}: ${err.message}`, { cause: err }),
  });
  socket.setTimeout(timeoutMs, () =>
    reader.abort(new DestinationUnreachableError(`no answer from ${o.address} within ${timeoutMs} ms`)),
  );
  try {
    const challenge = await reader.next();
    if (challenge.kind !== "frame" || challenge.frame.kind !== "CHALLENGE")
      throw new DestinationUnreachableError(`${o.address} closed the connection before its CHALLENGE`);
    const mac = helloMac(migrationToken(o.secret, o.migrationId), challenge.frame.nonce, o.migrationId, o.sourceHost);
    socket.write(
      encodeControl({ kind: "HELLO", migrationId: o.migrationId, sourceHost: o.sourceHost, mac, tunnel: true }),
    );
    const auth = await reader.next();
    if (auth.kind === "frame" && auth.frame.kind === "AUTH_FAIL")
      throw new AuthFailedError(`${o.address} refused migration ${o.migrationId}: ${auth.frame.message}`);
    if (auth.kind !== "frame" || auth.frame.kind !== "AUTH_OK")
      throw new DestinationUnreachableError(`${o.address} closed the connection during authentication`);
    reader.decoder.setLimits(CLIENT_TUNNEL);
    const tuning = tuneSocket(socket, undefined, log);
    // The link's rate is not known (a live migration's limits throttle QEMU, not the link), so
    // auto takes the RTT's word for it: none on a local link, zstd or LZ4 across a WAN.
    const compression = await compressionHere(o.compression ?? "auto", {
      bytesPerSec: undefined,
      rttUs: tuning?.rttUs,
    });
    const codec = compression.codec === "none" ? undefined : compression.codec;
    const offer = codec === undefined && socket instanceof TLSSocket && sealed.available && o.sealed !== false;
    socket.write(
      encodeControl({
        kind: "TUNNEL_OPEN",
        channel: o.channel,
        ...(codec && { codec }),
        ...(offer && { sealed: true }),
      }),
    );
    const answer = await reader.next();
    if (answer.kind === "frame" && answer.frame.kind === "TUNNEL_ERR")
      throw new TunnelRefusedError(`${o.address} refused the tunnel: ${answer.frame.message}`);
    if (answer.kind !== "frame" || answer.frame.kind !== "TUNNEL_OK")
      throw new DestinationUnreachableError(`${o.address} closed the connection before TUNNEL_OK`);
    if (answer.frame.sealed === true && !offer)
      throw new ProtocolError(`${o.address} switched to sealed records, which this side did not offer`);
    const sealKeys =
      answer.frame.sealed === true
        ? exportSealKeys(socket as TLSSocket, SEALED_LABEL_CLIENT_TO_SERVER, challenge.frame.nonce)
        : undefined;
    // Tunnelled bytes that arrived with TUNNEL_OK are handed back to the stream, ahead of the rest.
    reader.detach();
    const early = reader.decoder.takeRest();
    socket.pause();
    if (early.length > 0) socket.unshift(Buffer.from(early));
    socket.setTimeout(0);
    socket.setKeepAlive(true, 10_000);
    return { socket, rttUs: tuning?.rttUs, compression, ...(sealKeys && { sealKeys }) };
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

export interface TunnelListener {
  /** The unix socket QEMU connects to. */
  path: string;
  /** Stop accepting, cut every tunnel and remove the socket file. */
  close(): Promise<void>;
}

/**
 * Source side: a unix socket at `path`; each connection to it is carried through its own tunnel
 * (openTunnel(o)). A tunnel that cannot be opened closes the local connection (QEMU sees its peer
 * go away) and is reported to `on.error`; `on.opened` hears of every tunnel that opened, before
 * it carries a byte, and `on.closed` of every tunnel that ended (the caller knows whether it
 * expected that).
 */
export async function listenTunnel(
  path: string,
  o: TunnelOptions,
  log: Logger,
  on: { opened?: (t: OpenTunnel) => void; error?: (err: Error) => void; closed?: () => void } = {},
): Promise<TunnelListener> {
  rmSync(path, { force: true });
  const open = new Set<Socket>();
  // Sealed tunnels' pumps: stopped (their threads done with the fds) before any socket is destroyed.
  const pumps = new Set<() => Promise<void>>();
  let closing = false;
  const tlog = log.child({ migrationId: o.migrationId, channel: o.channel });
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (local) => {
    open.add(local);
    local.on("error", () => undefined);
    local.once("close", () => open.delete(local));
    void openTunnel(o, tlog).then(
      async (t) => {
        const { socket: remote, compression: c } = t;
        if (local.destroyed || closing) {
          local.destroy();
          return remote.destroy();
        }
        on.opened?.(t);
        open.add(remote);
        remote.once("close", () => open.delete(remote));
        const codec = c.codec === "none" ? undefined : new BlockCompressor({ codec: c.codec, level: c.level });
        tlog.debug({ codec: c.codec, level: c.level, sealed: t.sealKeys !== undefined }, "tunnel open");
        let stop: (() => Promise<void>) | undefined;
        const carried =
          t.sealKeys === undefined
            ? await splice(local, remote, codec)
            : await sealedSplice(local, remote, t.sealKeys, "seal", (p) => pumps.add((stop = p.stop)));
        if (stop !== undefined) pumps.delete(stop);
        warnIfCut(carried, tlog);
        const wireBytesOut = codec?.wireBytes ?? carried.aToB;
        tlog.debug({ bytesOut: carried.aToB, wireBytesOut, bytesIn: carried.bToA }, "tunnel closed");
        on.closed?.();
      },
      (err: unknown) => {
        local.destroy();
        tlog.warn({ err }, "tunnel could not be opened");
        on.error?.(err as Error);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    path,
    close: async () => {
      closing = true;
      const closed = new Promise<void>((r) => server.close(() => r()));
      await Promise.all([...pumps].map((stop) => stop()));
      for (const s of open) s.destroy();
      await closed;
      rmSync(path, { force: true });
    },
  };
}
