import { execFile } from "node:child_process";
import { readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { connect, type Socket } from "node:net";
import { promisify } from "node:util";
import { Kvm } from "@nats-io/kv";
import { headers } from "@nats-io/transport-node";
import { EventSigner } from "#common/signing.js";
import { compress } from "lz4-napi";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MOVERS_BUCKET, subjects } from "#common/layout.js";
import { MoverRegistration, type MigrationEvent } from "#schemas/index.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { BIN, type ServiceProcess } from "../../cli/stack.js";
import { parseAddress } from "../../services/mover/src/domain/data-channel/address.js";
import { helloMac, migrationToken } from "../../services/mover/src/domain/data-channel/auth.js";
import {
  encodeChunkHead,
  encodeControl,
  FRAME_CODES,
  HEADER_BYTES,
  NONCE_BYTES,
  readHeader,
} from "../../services/mover/src/domain/data-channel/frames.js";
import { makeImage, startTestStack, waitForEvent } from "../support/stack.js";

// Hostile input against a real stack (nats-server, coordinator and movers as processes): an event
// that used to take the coordinator down for good, an oversized junk command, an LZ4 bomb on the
// data channel and a crowd of idle unauthenticated connections. Each is refused visibly and the
// stack goes on serving.

const MiB = 1024 * 1024;
const run = promisify(execFile);
let stack: Awaited<ReturnType<typeof startTestStack>>;

beforeAll(async () => {
  // Raw frames and idle sockets reach the data port here, so it runs in plaintext (what a trusted
  // link may use): the LZ4 bound and the pre-auth budget hold inside TLS sessions as well.
  stack = await startTestStack({ env: { DWCP_DATA_PLAINTEXT: "on" } });
  await makeImage(stack, "a", "vms/h/disk.img", { sizeBytes: 8 * MiB + 3, zeroFraction: 0.3, seed: 5 });
});
afterAll(async () => stack?.cleanup());

const migrate = (dir: string) =>
  runMigration(
    stack.nats,
    buildStart({
      vm: "h",
      source: { host: "a", volumes: [{ path: "vms/h/disk.img", kind: "disk" }] },
      destination: { host: "b", dir },
      options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 2 * MiB },
    }),
    { timeoutMs: 90_000 },
  );

/**
 * Appends `e` to its migration's log, signed with the coordinator's key unless `signed` is false:
 * a bad event from a producer the stack trusts (a buggy or compromised coordinator) is the case
 * the fold must survive; an unsigned one is a forger's and is only ignored.
 */
async function publishEvent(e: MigrationEvent, signed = true): Promise<number> {
  const subject = subjects.migration(e.migrationId);
  const payload = new TextEncoder().encode(JSON.stringify(e));
  const msgID = `hostile.${e.migrationId}.${e.type}.${signed ? "signed" : "unsigned"}`;
  const h = headers();
  if (signed) {
    const key = EventSigner.fromSeedFile(stack.credentials.roles.get("coordinator")!.nkeyFile);
    for (const [k, v] of key.sign(subject, msgID, payload)) h.set(k, v);
  }
  const ack = await stack.nats.js.publish(subject, payload, { msgID, headers: h });
  return ack.seq;
}

async function dwcp(...args: string[]): Promise<string> {
  const env = { ...process.env, ...stack.env("cli") };
  const { stdout } = await run(process.execPath, [BIN, ...args, "--nats", stack.url], { maxBuffer: 16 * MiB, env });
  return stdout;
}

/** Resolves once `text` appears in the service's log (the log is the signal, read as it grows). */
async function logged(proc: ServiceProcess, text: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = readFileSync(proc.logFile, "utf8");
    const line = log.split("\n").find((l) => l.includes(text));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`"${text}" not in ${proc.name}'s log within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function dataAddress(host: string): Promise<{ host: string; port: number }> {
  const kv = await new Kvm(stack.nats.nc).open(MOVERS_BUCKET);
  const reg = MoverRegistration.parse((await kv.get(host))?.json());
  const address = parseAddress(reg.dataAddress);
  if (address === undefined) throw new Error(`bad data address ${reg.dataAddress}`);
  return address;
}

/** VmHWM (peak resident set) of a process, in bytes. */
function peakRss(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmHWM:"));
  return Number(line?.match(/(\d+)/)?.[1] ?? 0) * 1024;
}

describe("hostile input", () => {
  it("a MigrationPlanned with batchCount 2^32 sets its migration aside; the coordinator keeps serving", async () => {
    const at = new Date().toISOString();
    const base = { migrationId: "evil-plan", at, version: 1 as const };
    // Published back to back, so the bomb is stored before the coordinator can act on the request.
    const requested = publishEvent({
      type: "MigrationRequested",
      ...base,
      commandId: "evil-plan",
      vm: "evil",
      source: { host: "a", volumes: [{ path: "nowhere.img", kind: "disk" }] },
      destination: { host: "b", dir: "evil" },
      options: { chunkSizeBytes: 65536, batchSizeBytes: 65536, verify: true },
    });
    const bomb = publishEvent({
      type: "MigrationPlanned",
      ...base,
      destDir: "/tmp",
      chunkSizeBytes: 65536,
      chunksPerBatch: 1,
      volumes: [
        {
          index: 0,
          kind: "disk",
          sourcePath: "/etc/hostname",
          destName: "x",
          sizeBytes: 65536,
          chunkCount: 1,
          firstBatch: 0,
          batchCount: 4294967296,
        },
      ],
      totalBytes: 65536,
      chunkCount: 1,
      batchCount: 4294967296,
    });
    const [, bombSeq] = await Promise.all([requested, bomb]);
    const coordinator = stack.coordinators[0]!;
    const line = await logged(coordinator, "migration set aside");
    expect(JSON.parse(line)).toMatchObject({ migrationId: "evil-plan", streamSeq: bombSeq });

    // Still serving: another migration completes, and a coordinator started now catches up past it.
    expect((await migrate("after-bomb")).state).toBe("completed");
    const restarted = await stack.startCoordinator();
    await logged(restarted, "coordinator running");
    expect(coordinator.child.exitCode).toBeNull();
    expect(restarted.child.exitCode).toBeNull();

    const status = JSON.parse(await dwcp("status", "evil-plan", "--json")) as Record<string, unknown>;
    expect(status).toMatchObject({ migrationId: "evil-plan", state: "set-aside", reason: "EVENT_SET_ASIDE" });
    expect(String(status["message"])).toMatch(/batchCount/);
    const replay = JSON.parse(await dwcp("replay", "--until-seq", String(bombSeq + 1000), "--json")) as {
      setAside: Array<{ migrationId: string; seq: number; reason: string }>;
      migrations: Array<{ id: string; status: string }>;
    };
    expect(replay.setAside).toEqual([expect.objectContaining({ migrationId: "evil-plan", seq: bombSeq })]);
    expect(replay.migrations.find((m) => m.id === "evil-plan")?.status).toBe("set-aside");
    expect(replay.migrations.filter((m) => m.status === "completed").length).toBeGreaterThanOrEqual(1);

    // The same bomb unsigned is a forger's: ignored input, the migration is not set aside by it.
    const forged = { ...base, migrationId: "evil-forged" };
    const forgedSeq = await publishEvent(
      {
        type: "MigrationPlanned",
        ...forged,
        destDir: "/tmp",
        chunkSizeBytes: 65536,
        chunksPerBatch: 1,
        volumes: [],
        totalBytes: 65536,
        chunkCount: 1,
        batchCount: 4294967296,
      } as unknown as MigrationEvent,
      false,
    );
    const forgedStatus = JSON.parse(await dwcp("status", "evil-forged", "--json")) as Record<string, unknown>;
    expect(forgedStatus["state"]).not.toBe("set-aside");
    expect(forgedStatus).toMatchObject({
      ignored: { count: 1, recent: [expect.objectContaining({ seq: forgedSeq })] },
    });
  });

  it("a junk command with a 250 KiB type is rejected with a capped reason", async () => {
    const junk = { type: "X".repeat(250 * 1024), version: 1, commandId: "junk-type" };
    await stack.nats.js.publish(subjects.startMigration, JSON.stringify(junk), { msgID: "junk-type" });
    const rejected = await waitForEvent(stack, "junk-type", (e) => e.event.type === "MigrationRejected");
    expect(rejected.event).toMatchObject({ type: "MigrationRejected", reason: "UNKNOWN_COMMAND" });
    const message = (rejected.event as Extract<MigrationEvent, { type: "MigrationRejected" }>).message;
    expect(message.length).toBeLessThan(400);
    expect(JSON.stringify(rejected.event).length).toBeLessThan(1024);
    // A command too large for the command stream is refused by the server, not stored.
    const huge = JSON.stringify({ ...junk, type: "Y".repeat(300 * 1024), commandId: "junk-huge" });
    await expect(stack.nats.js.publish(subjects.startMigration, huge)).rejects.toThrow(/maximum/i);
  });

  it("a symlink out of the root is refused with the path as given, never where it leads", async () => {
    symlinkSync("/etc/hostname", join(stack.root("a"), "vms/h/escape.img"));
    const r = await runMigration(
      stack.nats,
      buildStart({
        vm: "h",
        source: { host: "a", volumes: [{ path: "vms/h/escape.img", kind: "disk" }] },
        destination: { host: "b", dir: "escaped" },
      }),
      { timeoutMs: 60_000 },
    );
    expect(r.state).toBe("rejected");
    const rejected = await waitForEvent(stack, r.migrationId, (e) => e.event.type === "MigrationRejected");
    expect(rejected.event).toMatchObject({ reason: "PATH_OUTSIDE_ROOT" });
    const text = JSON.stringify(rejected.event);
    expect(text).toContain("vms/h/escape.img");
    expect(text).not.toContain("/etc/hostname");
  });

  it("an LZ4 chunk that declares 1 GiB is refused without the receiver's memory growing", async () => {
    const mover = stack.movers.get("b")!;
    const pid = mover.child.pid!;
    const before = peakRss(pid);
    const socket = await open(await dataAddress("b"));
    const frames = frameStream(socket);
    const challenge = await frames.next("CHALLENGE");
    const nonce = challenge.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES);
    const id = "lz4-bomb";
    const mac = helloMac(migrationToken(Buffer.from(stack.secret), id), nonce, id, "a");
    socket.write(encodeControl({ kind: "HELLO", migrationId: id, sourceHost: "a", mac }));
    await frames.next("AUTH_OK");
    const begin = {
      migrationId: id,
      batch: 0,
      attempt: 0,
      destDir: "bomb",
      destName: "bomb.img",
      volumeSizeBytes: MiB,
      chunkSizeBytes: MiB,
      firstChunk: 0,
      chunkCount: 1,
    };
    socket.write(encodeControl({ kind: "BATCH_BEGIN", begin }));
    const packed = Buffer.from(await compress(Buffer.alloc(MiB)));
    packed.writeUInt32LE(1024 * MiB, 0); // the size prefix now claims 1 GiB
    const head = { offset: 0, length: MiB, crc32c: 0, zero: false, segments: [{ relOffset: 0, length: MiB }] };
    socket.write(encodeChunkHead({ ...head, packedLength: packed.length }));
    socket.write(packed);
    const refusal = await frames.next("CHUNK_ERR");
    expect(refusal.subarray(HEADER_BYTES).toString()).toMatch(/CHECKSUM_MISMATCH|does not unpack/);
    socket.destroy();
    expect(peakRss(pid) - before).toBeLessThan(256 * MiB);
    expect(mover.child.exitCode).toBeNull();
    await logged(mover, "compressed chunk does not unpack");
  });

  it("80 idle unauthenticated connections to the data port do not stop a migration", async () => {
    const target = await dataAddress("b");
    const idle = new Set<Socket>();
    let stopped = false;
    let closedByServer!: () => void;
    const firstClosed = new Promise<void>((resolve) => (closedByServer = resolve));
    const crowd = (): void => {
      const s = connect(target);
      s.on("error", () => undefined);
      s.resume(); // read (and ignore) the CHALLENGE, so the server's close is seen
      s.on("close", () => {
        idle.delete(s);
        if (stopped) return;
        closedByServer();
        setTimeout(crowd, 100).unref(); // the attacker comes straight back
      });
      idle.add(s);
    };
    for (let i = 0; i < 80; i++) crowd();
    try {
      const r = await migrate("crowded");
      expect(r.state).toBe("completed");
      // The crowd is not served either: each is dropped at its handshake deadline, and says so.
      await firstClosed;
      await logged(stack.movers.get("b")!, "no successful handshake within");
    } finally {
      stopped = true;
      for (const s of idle) s.destroy();
    }
  });
});

async function open(target: { host: string; port: number }): Promise<Socket> {
  const socket = connect(target);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return socket;
}

/** Whole frames as the server sends them; next(kind) resolves with the next frame, which must be of that kind. */
function frameStream(socket: Socket): { next(kind: keyof typeof FRAME_CODES): Promise<Buffer> } {
  let buffered = Buffer.alloc(0);
  const waiting: Array<() => void> = [];
  socket.on("data", (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    for (const w of waiting.splice(0)) w();
  });
  const take = (): Buffer | undefined => {
    if (buffered.length < HEADER_BYTES) return undefined;
    const len = HEADER_BYTES + readHeader(buffered).payloadLength;
    if (buffered.length < len) return undefined;
    const frame = buffered.subarray(0, len);
    buffered = buffered.subarray(len);
    return frame;
  };
  return {
    async next(kind) {
      for (;;) {
        const frame = take();
        if (frame !== undefined) {
          const code = readHeader(frame).code;
          if (code !== FRAME_CODES[kind]) throw new Error(`expected ${kind}, got frame code ${code}`);
          return frame;
        }
        if (socket.closed) throw new Error(`connection closed before ${kind}`);
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          socket.once("close", resolve);
        });
      }
    },
  };
}
