// The data channel and the replication link over TLS 1.3 with mutual authentication, with real
// sockets and the certificates `dwcp up` provisions: what moves, and every way in that is refused
// (visibly: the sender's error code, and the receiver's log line with the peer's address).
import { randomBytes } from "node:crypto";
import { access, readFile, rm } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { provision, type Provisioned } from "#common/credentials/provision.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import { parseAddress } from "../../services/mover/src/domain/data-channel/address.js";
import { sendBatch, type SendBatchOptions } from "../../services/mover/src/infra/data-channel/client.js";
import { startDataServer, type DataServer } from "../../services/mover/src/infra/data-channel/server.js";
import { connectAgent, serve } from "../../services/replication/src/infra/tcp.js";
import { batchOptions, capturingLog, linkTlsOf, makeSparseFile, MiB, tempDir } from "../support/data-channel.js";

const secret = randomBytes(32);
const SIZE = 3 * MiB;
let work: string;
let pki: Provisioned;
let foreign: Provisioned;
let source: string;
const tlsOf = (role: Parameters<typeof linkTlsOf>[1]): LinkTls => linkTlsOf(pki, role);

const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

beforeAll(async () => {
  work = await tempDir("tls");
  pki = await provision(join(work, "pki"), { hosts: ["a", "b", "c"] });
  foreign = await provision(join(work, "foreign"), { hosts: ["a", "b"] });
  source = join(work, "src.img");
  await makeSparseFile(source, SIZE, [
    { offset: 0, length: MiB },
    { offset: 2 * MiB + 4096, length: 100_000 },
  ]);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("data channel over mTLS", () => {
  const receiver = capturingLog();
  const attacker = capturingLog();
  let b: DataServer;
  let c: DataServer;
  const roots = { b: "", c: "" };

  beforeAll(async () => {
    roots.b = join(work, "root-b");
    roots.c = join(work, "root-c");
    const { mkdir } = await import("node:fs/promises");
    await Promise.all([mkdir(roots.b), mkdir(roots.c)]);
    const common = { listenHost: "127.0.0.1", listenPort: 0, secret, helloTimeoutMs: 1000 };
    b = await startDataServer({ ...common, host: "b", roots: [roots.b], log: receiver.log, tls: tlsOf("mover-b") });
    // The attacker's server holds a genuine certificate, but for host c.
    c = await startDataServer({ ...common, host: "c", roots: [roots.c], log: attacker.log, tls: tlsOf("mover-c") });
  });

  afterAll(async () => {
    await b?.close();
    await c?.close();
  });

  const batch = (over: Partial<SendBatchOptions> = {}): SendBatchOptions =>
    batchOptions(
      {
        address: b.address,
        secret,
        sourceHost: "a",
        migrationId: "mig-tls",
        sourcePath: source,
        volumeSizeBytes: SIZE,
      },
      { tls: { tls: tlsOf("mover-a"), destHost: "b" }, ...over },
    );

  const refusedFrom = (log: ReturnType<typeof capturingLog>, port: number) =>
    log.waitFor((l) => l["msg"] === "link refused: TLS failed" && l["remote"] === `127.0.0.1:${port}`);

  it("moves a migration's batch over mTLS: byte-identical, and the receiver logs which host sent it", async () => {
    const r = await sendBatch(batch({ destDir: "ok" }));
    expect(r.chunks).toHaveLength(3);
    expect((await readFile(join(roots.b, "ok", "disk.img.part"))).equals(await readFile(source))).toBe(true);
    const line = await receiver.waitFor((l) => l["msg"] === "batch received and synced" && l["batch"] === 0);
    expect(line).toMatchObject({ sourceHost: "a", tls: true, migrationId: "mig-tls" });
  });

  it("refuses a plaintext client, and logs it with the client's address", async () => {
    const target = parseAddress(b.address);
    if (target === undefined) throw new Error("bad address");
    const socket = connect(target);
    socket.on("error", () => undefined);
    await new Promise<void>((r) => socket.once("connect", () => r()));
    const port = socket.localPort ?? 0;
    const closed = new Promise<void>((r) => socket.once("close", () => r()));
    socket.write(Buffer.from("DWCP plaintext HELLO"));
    const line = await refusedFrom(receiver, port);
    expect(line).toMatchObject({ code: "TLS_HANDSHAKE_FAILED" });
    await closed;
    // A plaintext sender (waiting for a CHALLENGE that never comes in clear) fails its batch.
    const err: unknown = await sendBatch(batch({ destDir: "plain", tls: undefined })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "DESTINATION_UNREACHABLE" });
    expect(await exists(join(roots.b, "plain"))).toBe(false);
  });

  it("refuses a sender whose certificate another CA issued", async () => {
    const impostor: LinkTls = { ...linkTlsOf(foreign, "mover-a"), ca: tlsOf("mover-a").ca };
    const err: unknown = await sendBatch(batch({ destDir: "foreign", tls: { tls: impostor, destHost: "b" } })).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "TLS_HANDSHAKE_FAILED" });
    const line = await receiver.waitFor(
      (l) => l["msg"] === "link refused: TLS failed" && String(l["reason"]).startsWith("client certificate refused"),
    );
    expect(line["remote"]).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(await exists(join(roots.b, "foreign"))).toBe(false);
  });

  it("a sender refuses a destination that trusts another CA", async () => {
    const foreignB = await startDataServer({
      host: "b",
      listenHost: "127.0.0.1",
      listenPort: 0,
      secret,
      roots: [roots.c],
      log: attacker.log,
      tls: linkTlsOf(foreign, "mover-b"),
    });
    try {
      const err: unknown = await sendBatch(batch({ address: foreignB.address, destDir: "x" })).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "TLS_HANDSHAKE_FAILED" });
    } finally {
      await foreignB.close();
    }
  });

  it("a sender whose destination presents another host's certificate sends nothing (registry repointed)", async () => {
    // The registry's entry for host b points at the attacker's server, which holds mover-c's certificate.
    const err: unknown = await sendBatch(batch({ address: c.address, destDir: "stolen" })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "PEER_IDENTITY_MISMATCH", expected: "dwcp:host:b" });
    expect((err as Error).message).toContain("dwcp:host:c");
    expect(await exists(join(roots.c, "stolen"))).toBe(false);
    expect(attacker.lines.some((l) => l["migrationId"] === "mig-tls")).toBe(false);
  });

  /**
   * A relay on the sender's direction that parses it: TLS records up to the switch, then sealed
   * records (32-byte header, length at 4), handed whole to `edit`, which returns what to forward.
   */
  async function sealedRelay(edit: (index: number, record: Buffer) => Buffer[]): Promise<{
    port: number;
    close: () => Promise<void>;
    records: () => number;
  }> {
    const target = parseAddress(b.address);
    if (target === undefined) throw new Error("bad address");
    let records = 0;
    const relay = createServer((inbound) => {
      const outbound = connect(target);
      for (const s of [inbound, outbound]) s.on("error", () => (inbound.destroy(), outbound.destroy()));
      let pending = Buffer.alloc(0);
      let sealedIndex = -1; // -1: still TLS records
      inbound.on("data", (d: Buffer) => {
        pending = Buffer.concat([pending, d]);
        for (;;) {
          if (pending.length === 0) return;
          if (sealedIndex < 0 && pending[0] !== 0xd5) {
            if (pending.length < 5) return;
            const whole = 5 + pending.readUInt16BE(3);
            if (pending.length < whole) return;
            outbound.write(pending.subarray(0, whole));
            pending = pending.subarray(whole);
            continue;
          }
          if (sealedIndex < 0) sealedIndex = 0;
          if (pending.length < 32) return;
          const whole = 32 + pending.readUInt32BE(4);
          if (pending.length < whole) return;
          const record = Buffer.from(pending.subarray(0, whole));
          pending = pending.subarray(whole);
          records += 1;
          for (const out of edit(sealedIndex++, record)) outbound.write(out);
        }
      });
      outbound.pipe(inbound);
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    return {
      port: (relay.address() as { port: number }).port,
      records: () => records,
      close: () => new Promise<void>((r) => relay.close(() => r())),
    };
  }

  // Sealed records of a batch: 0 BATCH_BEGIN, 1 the first chunk's head, 2 its first segment, ...
  const edits: {
    name: string;
    reason: RegExp;
    edit: (seen: { done: boolean }) => (i: number, r: Buffer) => Buffer[];
  }[] = [
    {
      name: "one flipped ciphertext byte",
      reason: /failed authentication/,
      edit: (seen) => (i, r) => {
        if (i === 2) {
          r[32 + 1000] = (r[32 + 1000] as number) ^ 0x01;
          seen.done = true;
        }
        return [r];
      },
    },
    {
      name: "a replayed record",
      reason: /out of order/,
      edit: (seen) => (i, r) => (i === 1 ? ((seen.done = true), [r, r]) : [r]),
    },
    {
      name: "two records swapped",
      reason: /out of order/,
      edit: (seen) => {
        let held: Buffer | undefined;
        return (i, r) => {
          if (i === 1) {
            held = r;
            return [];
          }
          if (i === 2 && held !== undefined) return ((seen.done = true), [r, held]);
          return [r];
        };
      },
    },
  ];

  for (const { name, reason, edit } of edits) {
    it(`a relay alters sealed records (${name}): the batch fails with the reason, nothing lands`, async () => {
      const seen = { done: false };
      const relay = await sealedRelay(edit(seen));
      const dir = `altered-${name.replace(/\W+/g, "-")}`;
      const before = receiver.lines.length;
      try {
        const err: unknown = await sendBatch(batch({ address: `127.0.0.1:${relay.port}`, destDir: dir })).catch(
          (e: unknown) => e,
        );
        expect(seen.done).toBe(true);
        expect(err).toMatchObject({ code: "PROTOCOL_ERROR", retryable: true });
        expect((err as Error).message).toMatch(reason);
        const line = await receiver.waitFor((l) => l["msg"] === "batch failed" && receiver.lines.indexOf(l) >= before);
        expect(JSON.stringify(line["err"])).toMatch(reason);
        expect(await exists(join(roots.b, dir, "disk.img"))).toBe(false);
        // The altered chunk (the first) never reached the file: nothing but what the sender sealed lands.
        const part = await readFile(join(roots.b, dir, "disk.img.part")).catch(() => Buffer.alloc(0));
        expect(part.subarray(0, MiB).equals((await readFile(source)).subarray(0, MiB))).toBe(false);
      } finally {
        await relay.close();
      }
    });
  }

  it("switches many links at once to sealed records, each byte-identical (own destination process)", async () => {
    const { spawn } = await import("node:child_process");
    const { createInterface } = await import("node:readline");
    const { mkdir } = await import("node:fs/promises");
    const root = join(work, "root-many");
    await mkdir(root);
    const role = pki.roles.get("mover-b");
    if (role === undefined) throw new Error("no mover-b");
    const config = { caFile: pki.caFile, certFile: role.certFile, keyFile: role.keyFile, host: "b", root };
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(import.meta.dirname, "../support/data-server-process.ts"),
        JSON.stringify({ ...config, secretHex: secret.toString("hex") }),
      ],
      { env: { ...process.env, UV_THREADPOOL_SIZE: "16" }, stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      const address = await new Promise<string>((resolve, reject) => {
        child.once("exit", (code) => reject(new Error(`data server exited (${code})`)));
        createInterface({ input: child.stdout }).once("line", (l) =>
          resolve((JSON.parse(l) as { address: string }).address),
        );
      });
      const sender = capturingLog();
      const LINKS = 24;
      const results = await Promise.all(
        Array.from({ length: LINKS }, (_, i) =>
          sendBatch(batch({ address, migrationId: `mig-many-${i}`, destDir: `many-${i}`, log: sender.log })),
        ),
      );
      expect(results.every((r) => r.chunks.length === 3)).toBe(true);
      const want = await readFile(source);
      for (let i = 0; i < LINKS; i++)
        expect((await readFile(join(root, `many-${i}`, "disk.img.part"))).equals(want), `link ${i}`).toBe(true);
      const opened = sender.lines.filter((l) => l["msg"] === "data link open");
      expect(opened).toHaveLength(LINKS);
      expect(opened.every((l) => l["sealed"] === true)).toBe(true);
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("refuses a sender whose certificate names another host than its HELLO", async () => {
    const err: unknown = await sendBatch(
      batch({ destDir: "claimed", sourceHost: "a", tls: { tls: tlsOf("mover-c"), destHost: "b" } }),
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "AUTH_FAILED" });
    const line = await receiver.waitFor((l) => l["code"] === "PEER_IDENTITY_MISMATCH");
    expect(line).toMatchObject({ peerHosts: ["c"] });
    expect(await exists(join(roots.b, "claimed"))).toBe(false);
  });
});

describe("replication link over mTLS", () => {
  const agentLog = capturingLog();
  let agent: Awaited<ReturnType<typeof serve>>;
  const SECRET = "replication-tls-secret-0123456789";
  const echo = (frame: Buffer): Promise<Buffer> => Promise.resolve(Buffer.concat([Buffer.from("echo:"), frame]));

  beforeAll(async () => {
    const tls = { tls: tlsOf("replication-b"), log: agentLog.log, handshakeTimeoutMs: 1000 };
    agent = await serve(() => echo, { host: "127.0.0.1", port: 0, secret: SECRET, tls });
  });

  afterAll(async () => {
    await agent?.close();
  });

  const link = (tls: LinkTls | undefined, destHost = "b", port = agent.port) =>
    connectAgent({ host: "127.0.0.1", port, secret: SECRET, ...(tls ? { tls: { tls, destHost } } : {}) });

  it("carries requests between hosts of the deployment, and the agent logs which host connected", async () => {
    const l = await link(tlsOf("replication-a"));
    expect((await l.request(Buffer.from("ping"))).toString()).toBe("echo:ping");
    await l.close();
    expect(await agentLog.waitFor((x) => x["msg"] === "agent link")).toMatchObject({ peerHosts: ["a"] });
  });

  it("refuses a plaintext client, visibly", async () => {
    const err: unknown = await link(undefined).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "REPLICATION_LINK" });
    const line = await agentLog.waitFor((x) => x["msg"] === "link refused: TLS failed");
    expect(line).toMatchObject({ code: "TLS_HANDSHAKE_FAILED" });
    expect(line["remote"]).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it("refuses a client whose certificate another CA issued", async () => {
    const impostor: LinkTls = { ...linkTlsOf(foreign, "replication-a"), ca: tlsOf("replication-a").ca };
    const err: unknown = await link(impostor)
      .then((l) => l.request(Buffer.from("x")))
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "TLS_HANDSHAKE_FAILED" });
    await agentLog.waitFor(
      (x) => x["msg"] === "link refused: TLS failed" && String(x["reason"]).startsWith("client certificate refused"),
    );
  });

  it("a source refuses an agent presenting another host's certificate", async () => {
    const wrong = await serve(() => echo, {
      host: "127.0.0.1",
      port: 0,
      secret: SECRET,
      tls: { tls: tlsOf("replication-c"), log: agentLog.log },
    });
    try {
      const err: unknown = await link(tlsOf("replication-a"), "b", wrong.port).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "PEER_IDENTITY_MISMATCH", expected: "dwcp:host:b" });
    } finally {
      await wrong.close();
    }
  });
});
