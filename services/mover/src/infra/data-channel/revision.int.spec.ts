// Revision 1.1 of the data channel against a real TLS data server (provisioned mTLS): the HELLO
// answers the TLS session's exported nonce without a CHALLENGE, a peer that offers no ALPN still
// gets one, and an incremental batch's BASE_SUMS carry the base's digests, only for the link's
// own migration.
import { randomBytes } from "node:crypto";
import { mkdir, open, rm } from "node:fs/promises";
import type { Socket } from "node:net";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { provision } from "#common/credentials/provision.js";
import { hostIdentity } from "#common/pki.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import { dial } from "#common/secure-link/transport.js";
import { crc32c, strongHashSync } from "#native/index.js";
import { linkTlsOf, silentLog, tempDir } from "#test/support/data-channel.js";
import { parseAddress } from "../../domain/data-channel/address.js";
import { helloMac, migrationToken } from "../../domain/data-channel/auth.js";
import { CLIENT_PREAUTH, CLIENT_SESSION, FrameDecoder } from "../../domain/data-channel/decoder.js";
import {
  DATA_ALPN,
  encodeControl,
  type BaseSum,
  type BatchBegin,
  type ControlFrame,
} from "../../domain/data-channel/frames.js";
import { SocketFrameReader } from "./frame-reader.js";
import { exportedNonce } from "./revision.js";
import { startDataServer, type DataServer } from "./server.js";

const secret = randomBytes(32);
const CHUNK = 256 * 1024;
const CHUNKS = 8;
/** Chunks of the base with data; the others are holes (chunk 7: the base ends inside it). */
const DATA = [0, 1, 2, 4, 5, 6];

let work: string;
let root: string;
let server: DataServer;
let senderTls: LinkTls;
const chunks = new Map<number, Buffer>();

beforeAll(async () => {
  work = await tempDir("revision");
  root = join(work, "dest");
  await mkdir(join(root, "vm"), { recursive: true });
  const base = await open(join(root, "vm", "disk.img"), "w");
  for (const i of DATA) {
    const bytes = randomBytes(CHUNK);
    chunks.set(i, bytes);
    await base.write(bytes, 0, CHUNK, i * CHUNK);
  }
  await base.truncate(CHUNKS * CHUNK - 1);
  await base.close();
  const pki = await provision(join(work, "pki"), { hosts: ["a", "b"] });
  senderTls = linkTlsOf(pki, "mover-a");
  server = await startDataServer({
    host: "b",
    listenHost: "127.0.0.1",
    listenPort: 0,
    secret,
    roots: [root],
    log: silentLog,
    tls: linkTlsOf(pki, "mover-b"),
  });
});

afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

interface Conn {
  socket: Socket;
  reader: SocketFrameReader;
  next(): Promise<ControlFrame | "end">;
  write(f: ControlFrame): void;
}

async function connectTls(alpn: readonly string[] | undefined): Promise<Conn> {
  const target = parseAddress(server.address);
  if (target === undefined) throw new Error("bad address");
  const tls = { tls: senderTls, expectIdentity: hostIdentity("b"), ...(alpn === undefined ? {} : { alpn }) };
  const socket = await dial({ ...target, timeoutMs: 5000, tls });
  socket.on("error", () => undefined);
  const reader = new SocketFrameReader(socket, new FrameDecoder(CLIENT_PREAUTH));
  return {
    socket,
    reader,
    next: async () => {
      const step = await reader.next();
      if (step.kind === "end") return "end";
      if (step.kind !== "frame") throw new Error("unexpected CHUNK");
      return step.frame;
    },
    write: (f) => void socket.write(encodeControl(f)),
  };
}

const hello = (migrationId: string, nonce: Uint8Array): ControlFrame => ({
  kind: "HELLO",
  migrationId,
  sourceHost: "a",
  mac: helloMac(migrationToken(secret, migrationId), nonce, migrationId, "a"),
});

const begin = (migrationId: string, over: Partial<BatchBegin> = {}): ControlFrame => ({
  kind: "BATCH_BEGIN",
  begin: {
    migrationId,
    batch: 0,
    attempt: 0,
    destDir: "vm",
    destName: "disk.img",
    volumeSizeBytes: CHUNKS * CHUNK,
    chunkSizeBytes: CHUNK,
    firstChunk: 0,
    chunkCount: 1,
    incremental: true,
    baseSums: 7,
    ...over,
  },
});

describe("data channel revision 1.1", () => {
  it("authenticates with one HELLO answering the TLS session's exported nonce, no CHALLENGE", async () => {
    const c = await connectTls([DATA_ALPN]);
    try {
      expect((c.socket as TLSSocket).alpnProtocol).toBe(DATA_ALPN);
      c.write(hello("mig-rev-a", exportedNonce(c.socket as TLSSocket)));
      // The first frame the destination sends is the answer: it never sent a CHALLENGE.
      expect(await c.next()).toMatchObject({ kind: "AUTH_OK" });
    } finally {
      c.socket.destroy();
    }
  });

  it("refuses a HELLO that answers another session's nonce", async () => {
    const [first, second] = await Promise.all([connectTls([DATA_ALPN]), connectTls([DATA_ALPN])]);
    try {
      second.write(hello("mig-rev-b", exportedNonce(first.socket as TLSSocket)));
      expect(await second.next()).toMatchObject({ kind: "AUTH_FAIL" });
      expect(await second.next()).toBe("end");
    } finally {
      first.socket.destroy();
      second.socket.destroy();
    }
  });

  it("still sends a CHALLENGE to a sender that offers no ALPN", async () => {
    const c = await connectTls(undefined);
    try {
      expect((c.socket as TLSSocket).alpnProtocol).toBe(false);
      const challenge = await c.next();
      expect(challenge).toMatchObject({ kind: "CHALLENGE" });
      if (challenge === "end" || challenge.kind !== "CHALLENGE") throw new Error("no CHALLENGE");
      c.write(hello("mig-rev-c", challenge.nonce));
      expect(await c.next()).toMatchObject({ kind: "AUTH_OK" });
    } finally {
      c.socket.destroy();
    }
  });

  it("sends an incremental batch's base sums ahead: each chunk's CRC32C and BLAKE3, none where no data", async () => {
    const c = await connectTls([DATA_ALPN]);
    try {
      c.write(hello("mig-rev-d", exportedNonce(c.socket as TLSSocket)));
      expect(await c.next()).toMatchObject({ kind: "AUTH_OK" });
      c.reader.decoder.setLimits(CLIENT_SESSION);
      c.write(begin("mig-rev-d"));
      const sums: BaseSum[] = [];
      while (sums.length < CHUNKS) {
        const f = await c.next();
        if (f === "end") throw new Error("closed before the sums");
        if (f.kind !== "BASE_SUMS") continue;
        expect(f.id).toBe(7);
        expect(f.offset).toBe(sums.length * CHUNK);
        sums.push(...f.sums);
      }
      expect(sums).toHaveLength(CHUNKS);
      sums.forEach((s, i) => {
        const bytes = chunks.get(i);
        if (bytes === undefined) expect(s).toBe("none");
        else if (s === "none") expect.unreachable(`chunk ${i} has data`);
        else
          expect({ crc32c: s.crc32c, blake3: Buffer.from(s.blake3).toString("hex") }).toEqual({
            crc32c: crc32c(bytes),
            blake3: strongHashSync(bytes).toString("hex"),
          });
      });
    } finally {
      c.socket.destroy();
    }
  });

  it("refuses base sums of another migration than the link's, and of a batch that is not incremental", async () => {
    for (const [frame, code] of [
      [begin("mig-rev-other"), "AUTH_FAILED"],
      [begin("mig-rev-e", { incremental: undefined }), "PROTOCOL_ERROR"],
    ] as const) {
      const c = await connectTls([DATA_ALPN]);
      try {
        c.write(hello("mig-rev-e", exportedNonce(c.socket as TLSSocket)));
        expect(await c.next()).toMatchObject({ kind: "AUTH_OK" });
        c.reader.decoder.setLimits(CLIENT_SESSION);
        c.write(frame);
        const seen: ControlFrame[] = [];
        for (let f = await c.next(); f !== "end"; f = await c.next()) seen.push(f);
        expect(seen.map((f) => f.kind)).toEqual(["BATCH_ERR"]);
        expect(seen[0]).toMatchObject({ failure: { code } });
      } finally {
        c.socket.destroy();
      }
    }
  });
});
