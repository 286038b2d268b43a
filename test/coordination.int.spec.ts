import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { BIN } from "../cli/stack.js";
import { MoverRegistration } from "#schemas/index.js";
import { MOVERS_BUCKET } from "#common/layout.js";
import { AuthFailedError } from "../services/mover/src/errors.js";
import { sendBatch } from "../services/mover/src/infra/data-channel/client.js";
import { publishCommand, watchMigration } from "../cli/client.js";
import { buildStart, runMigration } from "../cli/migrate.js";
import { sha256File } from "../cli/verify.js";
import { subjects } from "#common/layout.js";
import { fold } from "../services/coordinator/src/domain/migration/evolve.js";
import { eventsOf, makeImage, startTestStack, waitForEvent } from "./support/stack.js";
import { linkTlsOf } from "./support/data-channel.js";

const MiB = 1024 * 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;

beforeAll(async () => {
  stack = await startTestStack();
  await makeImage(stack, "a", "vms/c/disk.img", { sizeBytes: 24 * MiB + 7, zeroFraction: 0.5, seed: 11 });
});
afterAll(async () => stack?.cleanup());

const command = (dir: string, extra: Partial<Parameters<typeof buildStart>[0]["options"]> = {}) =>
  buildStart({
    vm: "c",
    source: { host: "a", volumes: [{ path: "vms/c/disk.img", kind: "disk" }] },
    destination: { host: "b", dir },
    options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 4 * MiB, ...extra },
  });

const types = async (id: string) => (await eventsOf(stack, id)).map((e) => e.event.type);

describe("coordination", () => {
  it("a command published twice starts one migration", async () => {
    const c = command("dup");
    await publishCommand(stack.nats, c);
    const r = await runMigration(stack.nats, c, { timeoutMs: 60_000 });
    expect(r.state).toBe("completed");
    const t = await types(r.migrationId);
    expect(t.filter((x) => x === "MigrationRequested")).toHaveLength(1);
    expect(t.filter((x) => x === "MigrationPlanned")).toHaveLength(1);
  });

  it("two coordinators produce one plan and one terminal event", async () => {
    const second = await stack.startCoordinator();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await runMigration(stack.nats, command(`two${i}`), { timeoutMs: 60_000 });
        expect(r.state).toBe("completed");
        ids.push(r.migrationId);
      }
      for (const id of ids) {
        const t = await types(id);
        expect(t.filter((x) => x === "MigrationPlanned")).toHaveLength(1);
        expect(t.filter((x) => x === "MigrationCompleted")).toHaveLength(1);
        expect(t.filter((x) => x === "ChunkBatchRetried")).toHaveLength(0);
      }
    } finally {
      await second.stop();
      stack.coordinators.pop();
    }
  });

  it("a coordinator killed mid-migration is replaced and the migration completes", async () => {
    const c = command("restart", { bandwidthLimitBytesPerSec: 8 * MiB });
    const id = c.migrationId ?? "";
    await publishCommand(stack.nats, c);
    await waitForEvent(stack, id, (e) => e.event.type === "ChunkBatchTransferred");
    const old = stack.coordinators.pop();
    await old?.stop("SIGKILL");
    await stack.startCoordinator();
    const final = await watchMigration(stack.nats, id, () => undefined);
    expect(final.status).toBe("completed");
    expect(await sha256File(join(stack.root("b"), "restart/disk.img"))).toBe(
      await sha256File(join(stack.root("a"), "vms/c/disk.img")),
    );
    expect((await types(id)).filter((x) => x === "MigrationPlanned")).toHaveLength(1);
  });

  it("a redelivered batch rewrites the same bytes", async () => {
    const r = await runMigration(stack.nats, command("redeliver"), { timeoutMs: 60_000 });
    expect(r.state).toBe("completed");
    const dst = join(stack.root("b"), "redeliver/disk.img");
    const before = await sha256File(dst);
    // Hand the mover batch 1 again, as JetStream would after a lost ack.
    const events = await eventsOf(stack, r.migrationId);
    const planned = events.find((e) => e.event.type === "MigrationPlanned")?.event;
    if (planned?.type !== "MigrationPlanned") throw new Error("no plan");
    const v = planned.volumes[0];
    if (!v) throw new Error("no volume");
    const item = {
      type: "TransferBatch",
      version: 1,
      migrationId: r.migrationId,
      batch: 1,
      attempt: 0,
      sourceHost: "a",
      destHost: "b",
      destDir: planned.destDir,
      volume: { index: 0, kind: v.kind, sourcePath: v.sourcePath, destName: `${v.destName}`, sizeBytes: v.sizeBytes },
      chunkSizeBytes: planned.chunkSizeBytes,
      firstChunk: 4,
      chunkCount: 4,
    };
    await stack.nats.js.publish(subjects.work("a"), JSON.stringify(item), { msgID: `manual-${r.migrationId}` });
    // The migration already ended: the mover drops the item instead of writing.
    await new Promise<void>((resolve) => {
      const check = async (): Promise<void> => {
        const info = await stack.nats.jsm.streams.info("DWCP_WORK_a");
        if (info.state.messages === 0) resolve();
        else setTimeout(() => void check(), 50);
      };
      void check();
    });
    expect(await sha256File(dst)).toBe(before);
    const state = fold(
      r.migrationId,
      (await eventsOf(stack, r.migrationId)).map((e) => e.event),
    );
    expect(state.status).toBe("completed");
  });

  it("malformed, schema-invalid and unknown-version commands become rejections", async () => {
    const cases: Array<[string | object, string]> = [
      ["{this is not json", "INVALID_JSON"],
      [{ type: "StartMigration", version: 1, commandId: "bad-1" }, "SCHEMA_INVALID"],
      [
        { ...command("x1"), commandId: "bad-2", migrationId: "bad-2", options: { chunkSizeBytes: 100_000 } },
        "CHUNK_SIZE_INVALID",
      ],
      [
        { ...command("x2"), commandId: "bad-3", migrationId: "bad-3", source: { host: "a", volumes: [] } },
        "EMPTY_VOLUMES",
      ],
      [{ ...command("x3"), commandId: "bad-4", migrationId: "bad-4", version: 9 }, "UNSUPPORTED_VERSION"],
      [{ type: "DeleteEverything", version: 1, commandId: "bad-5" }, "UNKNOWN_COMMAND"],
    ];
    for (const [body, reason] of cases) {
      const ack = await stack.nats.js.publish(
        subjects.startMigration,
        typeof body === "string" ? body : JSON.stringify(body),
      );
      const id =
        typeof body === "object" && "commandId" in body
          ? String((body as { commandId: string }).commandId)
          : `cmd-${ack.seq}`;
      const final = await watchMigration(stack.nats, id, () => undefined);
      expect(final, reason).toMatchObject({ status: "rejected", reason });
    }
    const r = await runMigration(stack.nats, command("after-bad"), { timeoutMs: 60_000 });
    expect(r.state).toBe("completed");
  });

  it("cancel stops a migration and removes its partial files", async () => {
    const c = command("cancelled", { bandwidthLimitBytesPerSec: 4 * MiB });
    const id = c.migrationId ?? "";
    await publishCommand(stack.nats, c);
    await waitForEvent(stack, id, (e) => e.event.type === "ChunkBatchTransferred");
    await publishCommand(stack.nats, {
      type: "CancelMigration",
      version: 1,
      commandId: `cancel-${id}`,
      migrationId: id,
    });
    const final = await watchMigration(stack.nats, id, () => undefined);
    expect(final.status).toBe("cancelled");
    const dir = join(stack.root("b"), "cancelled");
    await expect
      .poll(
        () => {
          try {
            return readFileSync(join(dir, "disk.img.part")).length;
          } catch {
            return -1;
          }
        },
        { timeout: 15_000 },
      )
      .toBe(-1);
  });

  it("the CLI migrates with --wait --json and fails with a reason and a non-zero exit", () => {
    const env = stack.env("cli");
    const ok = spawnSync(
      process.execPath,
      [
        BIN,
        "migrate",
        "--vm",
        "c",
        "--from",
        "a:vms/c/disk.img",
        "--to",
        "b:cli",
        "--chunk-size",
        "1M",
        "--wait",
        "--json",
      ],
      { env, encoding: "utf8", timeout: 60_000 },
    );
    expect(ok.status, ok.stderr).toBe(0);
    const res = JSON.parse(ok.stdout.trim().split("\n").at(-1) ?? "{}") as {
      state: string;
      bytes: number;
      migrationId: string;
      seconds: number;
    };
    expect(res).toMatchObject({ state: "completed", bytes: 24 * MiB + 7 });
    expect(
      createHash("sha256")
        .update(readFileSync(join(stack.root("b"), "cli/disk.img")))
        .digest("hex"),
    ).toBe(
      createHash("sha256")
        .update(readFileSync(join(stack.root("a"), "vms/c/disk.img")))
        .digest("hex"),
    );
    const bad = spawnSync(
      process.execPath,
      [BIN, "migrate", "--vm", "c", "--from", "a:vms/missing.img", "--to", "b:cli2", "--wait"],
      { env, encoding: "utf8", timeout: 60_000 },
    );
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/rejected: SOURCE_NOT_FOUND/);
    const usage = spawnSync(process.execPath, [BIN, "migrate", "--vm", "c", "--from", "a:x", "--to", "b", "--wait"], {
      env,
      encoding: "utf8",
    });
    expect(usage.status).toBe(2);
    expect(usage.stderr).toMatch(/--to must be HOST:DIR, got "b"/);
  });

  it("the destination mover refuses a data-channel connection that does not know the secret", async () => {
    const entry = await (await new Kvm(stack.nats.nc).open(MOVERS_BUCKET)).get("b");
    const reg = MoverRegistration.parse(entry?.json());
    const attempt = sendBatch({
      address: reg.dataAddress,
      secret: Buffer.from("not-the-cluster-secret!!"),
      // A genuine host certificate: what is under test is the secret, checked inside the TLS session.
      tls: { tls: linkTlsOf(stack.credentials, "mover-a"), destHost: "b" },
      sourceHost: "a",
      migrationId: "intruder",
      batch: 0,
      attempt: 0,
      sourcePath: join(stack.root("a"), "vms/c/disk.img"),
      destDir: join(stack.root("b"), "intruder"),
      destName: "disk.img",
      volumeSizeBytes: 24 * MiB + 7,
      chunkSizeBytes: 1024 * 1024,
      firstChunk: 0,
      chunkCount: 1,
      log: pino({ level: "silent" }),
    });
    await expect(attempt).rejects.toBeInstanceOf(AuthFailedError);
    expect(existsSync(join(stack.root("b"), "intruder"))).toBe(false);
  });
});
