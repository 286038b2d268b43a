// `dwcp migrate-set` through the built binary against a real stack: a running migration's
// bandwidth limit is raised mid-transfer, the coordinator records it, and the movers sending its
// batches take the new rate at once (the migration ends long before the old rate would allow);
// unknown and ended migrations, and a limit that is not a rate, are refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { subjects } from "#common/layout.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { publishCommand } from "../../cli/client.js";
import { cliOf, eventsOf, makeImage, startTestStack, waitForEvent } from "../support/stack.js";

const MiB = 1024 * 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;
const dwcp = (...args: string[]) => cliOf(stack)(...args);

beforeAll(async () => {
  stack = await startTestStack();
  await makeImage(stack, "a", "vms/slow/disk.img", { sizeBytes: 16 * MiB, zeroFraction: 0, seed: 11 });
});
afterAll(async () => stack?.cleanup());

const start = (id: string, limit: number) =>
  buildStart({
    vm: id,
    source: { host: "a", volumes: [{ path: "vms/slow/disk.img", kind: "disk" }] },
    destination: { host: "b", dir: `out/${id}` },
    // Random bytes, no compression: the limit (on wire bytes) paces the logical bytes one to one.
    options: {
      chunkSizeBytes: 1 * MiB,
      batchSizeBytes: 4 * MiB,
      bandwidthLimitBytesPerSec: limit,
      compression: "none",
    },
    migrationId: id,
  });

/** Resolves with the first progress report of `id` that has moved some bytes. */
function firstProgress(id: string, timeoutMs = 60_000): Promise<void> {
  const sub = stack.nats.nc.subscribe(subjects.progress(id));
  const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
  return (async () => {
    for await (const m of sub) {
      if ((m.json<{ bytes?: number }>().bytes ?? 0) > 0) {
        clearTimeout(timer);
        sub.unsubscribe();
        return;
      }
    }
    throw new Error(`no progress from ${id} within ${timeoutMs} ms`);
  })();
}

describe("dwcp migrate-set", () => {
  it("raises a running migration's limit: the batches in flight speed up at once", async () => {
    // 16 MiB at 512 KiB/s takes 32 s; raised to 256 MiB/s after the first bytes, it ends in well under that.
    const id = "set-1";
    const moving = firstProgress(id);
    await publishCommand(stack.nats, start(id, 512 * 1024));
    await moving;
    const t0 = performance.now();
    const r = await dwcp("migrate-set", id, "--bandwidth-limit", "256M/s");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`migration ${id} now has a bandwidth limit of 256`);
    const done = await waitForEvent(stack, id, (e) => ["MigrationCompleted", "MigrationFailed"].includes(e.event.type));
    expect(done.event.type).toBe("MigrationCompleted");
    // At the old rate the rest (over 15 MiB) needs more than 30 s: 12 s leaves room for a slow machine.
    expect(performance.now() - t0).toBeLessThan(12_000);
    const changed = (await eventsOf(stack, id)).filter((e) => e.event.type === "MigrationOptionsChanged");
    expect(changed.map((e) => e.event)).toEqual([
      expect.objectContaining({ type: "MigrationOptionsChanged", bandwidthLimitBytesPerSec: 256 * MiB }),
    ]);
  });

  it("changes the weight and priority of a running migration and keeps its limit", async () => {
    const id = "set-3";
    const moving = firstProgress(id);
    await publishCommand(stack.nats, start(id, 512 * 1024));
    await moving;
    const r = await dwcp("migrate-set", id, "--weight", "3", "--priority=-2");
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain(`migration ${id} now has weight 3, priority -2`);
    const bad = await dwcp("migrate-set", id, "--weight", "0");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--weight must be a whole number");
    expect((await dwcp("migrate-set", id, "--bandwidth-limit", "none")).code).toBe(0);
    const done = await waitForEvent(stack, id, (e) => ["MigrationCompleted", "MigrationFailed"].includes(e.event.type));
    expect(done.event.type).toBe("MigrationCompleted");
    const changed = (await eventsOf(stack, id)).filter((e) => e.event.type === "MigrationOptionsChanged");
    expect(changed.map((e) => e.event)).toEqual([
      expect.objectContaining({ bandwidthLimitBytesPerSec: 512 * 1024, weight: 3, priority: -2 }),
      expect.objectContaining({ weight: 3, priority: -2 }),
    ]);
    expect(changed[1]?.event).not.toHaveProperty("bandwidthLimitBytesPerSec");
  });

  it("refuses an unknown migration, an ended one and a limit that is not a rate", async () => {
    const unknown = await dwcp("migrate-set", "no-such-id", "--bandwidth-limit", "1M/s");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("no migration with id no-such-id");

    const id = "set-2";
    const ended = await runMigration(stack.nats, start(id, 256 * MiB), { timeoutMs: 60_000 });
    expect(ended.state).toBe("completed");
    const late = await dwcp("migrate-set", id, "--bandwidth-limit", "none");
    expect(late.code).toBe(1);
    expect(late.stderr).toContain(`migration ${id} already ended (completed)`);

    const before = (await eventsOf(stack, id)).length;
    const bad = await dwcp("migrate-set", id, "--bandwidth-limit", "banana");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--bandwidth-limit must be a rate");
    expect((await eventsOf(stack, id)).length, "a usage error publishes nothing").toBe(before);
  });
});
