// End-to-end integrity: the source logs a BLAKE3 per chunk and the coordinator a BLAKE3 per volume;
// the destination checks them before finalize. A relay on the data channel that alters chunk
// bytes and keeps their CRC32C right must not get a migration completed with the altered bytes.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Kvm, type KvWatchEntry } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { sha256File } from "../../cli/verify.js";
import { MOVERS_BUCKET } from "#common/layout.js";
import { crc32c, strongHashSync, volumeHash } from "#native/index.js";
import { MoverRegistration, type MigrationEvent } from "#schemas/index.js";
import { CrcForgingRelay, crcNeutralPattern, FORGED_BYTES } from "../support/crc-forging-relay.js";
import { eventsOf, makeImage, startTestStack } from "../support/stack.js";

const MiB = 1024 * 1024;
const CHUNK = 1 * MiB;

describe("end-to-end integrity by BLAKE3", () => {
  let stack: Awaited<ReturnType<typeof startTestStack>>;
  beforeAll(async () => {
    // The relay forges CRC32Cs inside DWCP frames, so the data channel runs in plaintext here
    // (TLS would stop it first, see data-channel-tls): what is under test is the BLAKE3 check.
    stack = await startTestStack({ env: { DWCP_DATA_PLAINTEXT: "on" } });
  });
  afterAll(async () => stack?.cleanup());

  const migrate = async (vm: string, file: string, compression?: "lz4") =>
    runMigration(
      stack.nats,
      buildStart({
        vm,
        source: { host: "a", volumes: [{ path: `vms/${vm}/${file}`, kind: "disk" }] },
        destination: { host: "b", dir: `in/${vm}` },
        options: {
          chunkSizeBytes: CHUNK,
          batchSizeBytes: 4 * CHUNK,
          ...(compression === undefined ? {} : { compression }),
        },
      }),
      { timeoutMs: 90_000 },
    );

  let plainWireBytes = 0;
  // Compressed chunks (LZ4, asked for: `auto` sends chunks to a loopback destination as they
  // are) are hashed unpacked at the destination.
  it.each([
    ["plain", "ok", undefined],
    ["LZ4-compressed", "ok-lz4", "lz4"],
  ] as const)(
    "logs each chunk's BLAKE3 and the volume's hash tree as the source read them; both ends agree (%s)",
    async (_name, vm, compression) => {
      const src = await makeImage(stack, "a", `vms/${vm}/disk.img`, {
        sizeBytes: 12 * MiB,
        zeroFraction: 0.5,
        seed: 7,
      });
      const r = await migrate(vm, "disk.img", compression);
      expect(r).toMatchObject({ state: "completed" });
      // The same image both times: the compressed run put fewer bytes on the wire.
      if (compression === undefined) plainWireBytes = r.wireBytes;
      else expect(r.wireBytes).toBeLessThan(plainWireBytes);
      const dst = join(stack.root("b"), `in/${vm}/disk.img`);
      expect(await sha256File(dst)).toBe(await sha256File(src));

      const bytes = await readFile(src);
      const events = (await eventsOf(stack, r.migrationId)).map((e) => e.event);
      const chunks = events
        .flatMap((e) => (e.type === "ChunkBatchTransferred" ? e.chunks : []))
        .sort((a, b) => a.offset - b.offset);
      expect(chunks).toHaveLength(12);
      // Zero chunks (holes, not sent) hash as their zeros, like every other chunk.
      expect(chunks.some((c) => c.zero)).toBe(true);
      const expected = chunks.map((c) => strongHashSync(bytes.subarray(c.offset, c.offset + c.length)));
      expect(chunks.map((c) => c.blake3)).toEqual(expected.map((h) => h.toString("base64url")));
      const completed = events.find((e) => e.type === "MigrationCompleted") as Extract<
        MigrationEvent,
        { type: "MigrationCompleted" }
      >;
      expect(completed.volumes[0]?.blake3).toBe(volumeHash(Buffer.concat(expected)).toString("base64url"));
    },
  );

  it("refuses to finalize bytes a relay altered under a valid CRC32C (VOLUME_HASH_MISMATCH)", async () => {
    const pattern = crcNeutralPattern();
    expect(pattern).toHaveLength(FORGED_BYTES);
    expect(crc32c(pattern)).toBe(crc32c(Buffer.alloc(FORGED_BYTES))); // the forgery keeps any CRC32C

    await makeImage(stack, "a", "vms/evil/disk.img", { sizeBytes: 16 * MiB, zeroFraction: 0.2, seed: 9 });
    // The attacker repoints host b's registration at a relay in front of b's data channel, and
    // keeps it there when b's heartbeat writes it back.
    const kv = await new Kvm(stack.nats.nc).open(MOVERS_BUCKET);
    const entry = await kv.get("b");
    const real = MoverRegistration.parse(entry?.json());
    const at = real.dataAddress.lastIndexOf(":");
    const relay = await CrcForgingRelay.start({
      host: real.dataAddress.slice(0, at),
      port: Number(real.dataAddress.slice(at + 1)),
    });
    const repoint = async (reg: MoverRegistration): Promise<void> => {
      await kv.put("b", JSON.stringify({ ...reg, dataAddress: relay.address }));
    };
    await repoint(real);
    const watch = await kv.watch({ key: "b" });
    const keeping = (async () => {
      for await (const e of watch as AsyncIterable<KvWatchEntry>) {
        if (e.operation !== "PUT") continue;
        const reg = MoverRegistration.parse(e.json());
        if (reg.dataAddress !== relay.address) await repoint(reg);
      }
    })();
    try {
      const r = await migrate("evil", "disk.img");
      expect(relay.forged).toBeGreaterThan(0);
      // The refusal is visible: the migration failed with the code, in the log.
      expect(r).toMatchObject({ state: "failed", reason: "VOLUME_HASH_MISMATCH" });
      const events = (await eventsOf(stack, r.migrationId)).map((e) => e.event);
      const failed = events.find((e) => e.type === "MigrationFailed");
      expect(failed).toMatchObject({ code: "VOLUME_HASH_MISMATCH" });
      expect(events.some((e) => e.type === "MigrationCompleted")).toBe(false);
      // Every batch passed the destination's CRC32C check: the forgery was caught by the hash only.
      expect(events.filter((e) => e.type === "ChunkBatchFailed")).toEqual([]);
      expect(existsSync(join(stack.root("b"), "in/evil/disk.img"))).toBe(false);
    } finally {
      watch.stop();
      await keeping;
      await kv.put("b", JSON.stringify(real));
      await relay.close();
    }
  });
});
