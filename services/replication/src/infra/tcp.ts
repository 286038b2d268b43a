import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";
import { DwcpError } from "#common/errors.js";

// Agent-to-agent link: the server sends a 32-byte nonce, the client answers with
// HMAC-SHA256(key, "dwcp-repl-v1" || nonce) where key = HMAC-SHA256(DWCP_SECRET, "replication");
// then both sides exchange [u32 BE length][u32 BE request id][frame]. Requests run concurrently
// at the server and replies carry their id, so several chunks are in flight on one socket.

const NONCE = 32;
/** Largest frame accepted before anything is allocated: a 64 MiB chunk plus its header. */
export const MAX_FRAME_BYTES = 65 * 1024 * 1024;

export class LinkError extends DwcpError {
  readonly code = "REPLICATION_LINK" as const;
  readonly retryable = true;
}

const keyOf = (secret: string): Buffer => createHmac("sha256", secret).update("replication").digest();
const macOf = (secret: string, nonce: Buffer): Buffer =>
  createHmac("sha256", keyOf(secret)).update("dwcp-repl-v1").update(nonce).digest();

/**
 * Splits a byte stream into [id, frame] records; refuses an oversized length before buffering it.
 * `first` consumes a fixed preamble (the nonce or its MAC) and returns the bytes it used.
 */
function framer(socket: Socket, onFrame: (id: number, frame: Buffer) => void, first?: (b: Buffer) => number): void {
  // Arriving pieces are queued and joined once a whole record is there: concatenating on every
  // 64 KiB read would copy a large frame over and over.
  let parts: Buffer[] = [];
  let queued = 0;
  let need = first ? NONCE : 8;
  let preamble = first;
  socket.on("data", (d: Buffer) => {
    parts.push(d);
    queued += d.length;
    while (queued >= need) {
      let buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, queued);
      if (preamble) {
        const used = preamble(buf);
        if (used <= 0) return; // -1: refused (the socket is being destroyed)
        preamble = undefined;
        buf = buf.subarray(used);
      }
      while (buf.length >= 8) {
        const len = buf.readUInt32BE(0);
        if (len > MAX_FRAME_BYTES)
          return void socket.destroy(new LinkError(`frame of ${len} bytes exceeds ${MAX_FRAME_BYTES}`));
        if (buf.length < 8 + len) break;
        onFrame(buf.readUInt32BE(4), buf.subarray(8, 8 + len));
        buf = buf.subarray(8 + len);
      }
      parts = buf.length > 0 ? [buf] : [];
      queued = buf.length;
      need = buf.length >= 8 ? 8 + buf.readUInt32BE(0) : 8;
    }
  });
}

const record = (id: number, frame: Buffer): Buffer[] => {
  const h = Buffer.allocUnsafe(8);
  h.writeUInt32BE(frame.length, 0);
  h.writeUInt32BE(id, 4);
  return [h, frame];
};

/** Serves `handle` to clients that prove they know the secret. */
export async function serve(
  handle: (frame: Buffer) => Promise<Buffer>,
  o: { host: string; port: number; secret: string },
): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    const nonce = randomBytes(NONCE);
    socket.on("error", () => socket.destroy());
    socket.write(nonce);
    const expected = macOf(o.secret, nonce);
    framer(
      socket,
      (id, frame) => {
        // The frame is a view of buffers this socket handed over (or their concat): nothing
        // writes to them again, so the handler may keep it without a copy.
        handle(frame).then(
          (reply) => socket.writable && socket.write(Buffer.concat(record(id, reply))),
          () => socket.destroy(),
        );
      },
      (b) => {
        if (b.length < NONCE) return 0;
        if (!timingSafeEqual(b.subarray(0, NONCE), expected)) return (socket.destroy(), -1);
        return NONCE;
      },
    );
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(o.port, o.host, () => resolve()));
  const addr = server.address();
  return {
    server,
    port: typeof addr === "object" && addr ? addr.port : o.port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** A Transport over one authenticated socket; a broken link fails every pending request. */
export async function connectAgent(o: {
  host: string;
  port: number;
  secret: string;
}): Promise<{ request(frame: Buffer): Promise<Buffer>; close(): Promise<void> }> {
  const socket = connect(o.port, o.host);
  socket.setNoDelay(true);
  const pending = new Map<number, { resolve(b: Buffer): void; reject(e: Error): void }>();
  let failure: Error | undefined;
  const fail = (err: Error): void => {
    failure ??= new LinkError(`replication link to ${o.host}:${o.port} failed: ${err.message}`, { cause: err });
    for (const p of pending.values()) p.reject(failure);
    pending.clear();
  };
  socket.on("error", fail);
  socket.on("close", () => fail(new Error("connection closed")));
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    framer(
      socket,
      (id, frame) => {
        const p = pending.get(id);
        pending.delete(id);
        p?.resolve(Buffer.from(frame));
      },
      (b) => {
        if (b.length < NONCE) return 0;
        socket.write(macOf(o.secret, b.subarray(0, NONCE)));
        resolve();
        return NONCE;
      },
    );
  });
  let nextId = 1;
  return {
    request(frame) {
      if (failure) return Promise.reject(failure);
      const id = nextId++ >>> 0;
      return new Promise<Buffer>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        for (const part of record(id, frame)) socket.write(part);
      });
    },
    close: () => new Promise<void>((r) => socket.end(() => r())),
  };
}
