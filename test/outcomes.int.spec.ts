import { chmod, chown, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readMigration } from "../cli/client.js";
import { buildStart, runCancel, runMigration } from "../cli/migrate.js";
import { cliOf, eventsOf, makeImage, startTestStack, waitForEvent } from "./support/stack.js";

const MiB = 1024 * 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;

beforeAll(async () => {
  stack = await startTestStack();
  await makeImage(stack, "a", "vms/o/disk.img", { sizeBytes: 3 * MiB + 5, zeroFraction: 0.3, seed: 5 });
});
afterAll(async () => stack?.cleanup());

const start = (dir: string, migrationId?: string) =>
  buildStart({
    vm: "o",
    source: { host: "a", volumes: [{ path: "vms/o/disk.img", kind: "disk" }] },
    destination: { host: "b", dir },
    options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 1 * MiB },
    ...(migrationId === undefined ? {} : { migrationId }),
  });

/** `dwcp <args>` as a user runs it against the test stack. */
const dwcp = (...args: string[]) => cliOf(stack)(...args);

describe("honest outcomes", () => {
  it("a start reusing another id is refused on that id's subject; the migration stays as it was", async () => {
    const first = await runMigration(stack.nats, start("o1", "used-id"), { timeoutMs: 60_000 });
    expect(first.state).toBe("completed");
    const before = await readMigration(stack.nats, "used-id");

    const again = await runMigration(stack.nats, start("o2", "used-id"), { timeoutMs: 60_000 });
    expect(again).toMatchObject({ state: "rejected", reason: "MIGRATION_ID_IN_USE", bytes: 0 });

    const after = await readMigration(stack.nats, "used-id");
    const refusals = after.events.filter((e) => e.event.type === "CommandRejected");
    expect(refusals, "published where a watcher of the id looks").toHaveLength(1);
    expect(after.state.status).toBe("completed");
    expect(after.state.totals).toEqual(before.state.totals);
    expect(after.state.refusedCommands?.count).toBe(1);
  });

  it("dwcp migrate --id <used> --wait --json exits 1 with MIGRATION_ID_IN_USE", async () => {
    const r = await dwcp(
      "migrate",
      "--vm",
      "o",
      "--from",
      "a:vms/o/disk.img",
      "--to",
      "b:o3",
      "--id",
      "used-id",
      "--wait",
      "--json",
    );
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ state: "rejected", reason: "MIGRATION_ID_IN_USE" });
  });

  it("cancel of an unknown id is refused and leaves no migration behind", async () => {
    const r = await runCancel(stack.nats, "no-such-id");
    expect(r).toMatchObject({ ok: false, reason: "UNKNOWN_MIGRATION" });
    expect((await readMigration(stack.nats, "no-such-id")).state.status).toBe("none");
    const cli = await dwcp("cancel", "nosuch-id");
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/cannot cancel nosuch-id: no migration with id nosuch-id/);
    expect(cli.stdout).toBe("");
    const list = await dwcp("status", "--json");
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ migrationId: string }>).map((m) => m.migrationId)).not.toContain(
      "nosuch-id",
    );
  });

  it("cancel of a migration that ended is refused (MIGRATION_ENDED); of a running one, it is cancelled", async () => {
    const ended = await runCancel(stack.nats, "used-id");
    expect(ended).toMatchObject({ ok: false, reason: "MIGRATION_ENDED" });
    expect((await readMigration(stack.nats, "used-id")).state.status).toBe("completed");

    const slow = buildStart({
      vm: "o",
      source: { host: "a", volumes: [{ path: "vms/o/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "o4" },
      options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 1 * MiB, bandwidthLimitBytesPerSec: 256 * 1024 },
    });
    const running = runMigration(stack.nats, slow, { timeoutMs: 60_000 });
    await waitForEvent(stack, slow.migrationId ?? "", (e) => e.event.type === "MigrationPlanned");
    const cancelled = await runCancel(stack.nats, slow.migrationId ?? "", { reason: "test" });
    expect(cancelled).toMatchObject({ ok: true });
    expect((await running).state).toBe("cancelled");
    const types = (await eventsOf(stack, slow.migrationId ?? "")).map((e) => e.event.type);
    expect(types.filter((t) => t === "MigrationCancelled")).toHaveLength(1);
  });
});

describe("file modes", () => {
  it("the destination file gets the source's mode (and owner, as root)", async () => {
    const src = await makeImage(stack, "a", "vms/m/disk.img", { sizeBytes: 1 * MiB + 3, zeroFraction: 0.5, seed: 6 });
    await chmod(src, 0o604);
    const root = process.getuid?.() === 0;
    if (root) await chown(src, 1234, 4321);
    const r = await runMigration(
      stack.nats,
      buildStart({
        vm: "m",
        source: { host: "a", volumes: [{ path: "vms/m/disk.img", kind: "disk" }] },
        destination: { host: "b", dir: "m1" },
      }),
      { timeoutMs: 60_000 },
    );
    expect(r.state).toBe("completed");
    const st = await stat(join(stack.root("b"), "m1", "disk.img"));
    expect((st.mode & 0o7777).toString(8)).toBe("604");
    if (root) expect([st.uid, st.gid]).toEqual([1234, 4321]);
  });
});
