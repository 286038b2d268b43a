import { describe, expect, it } from "vitest";
import { MigrationPlanned, StartMigration, type MigrationEvent } from "#schemas/index.js";
import { decide, DEFAULT_RETRY_POLICY } from "./decide.js";
import { evolve, fold } from "./evolve.js";

const ctx = { now: new Date("2026-01-01T00:00:10.000Z"), policy: DEFAULT_RETRY_POLICY };
const MiB = 1024 * 1024;
const start = StartMigration.parse({
  type: "StartMigration",
  version: 1,
  commandId: "c1",
  migrationId: "m1",
  vm: "vm1",
  source: { host: "a", volumes: [{ path: "/src/disk.img", kind: "disk" }] },
  destination: { host: "b", dir: "vms/vm1" },
  options: { chunkSizeBytes: MiB, batchSizeBytes: 4 * MiB },
});
const requested = decide(fold("m1", []), start, ctx);
const plan = (sizeBytes: number): MigrationEvent[] =>
  decide(
    fold("m1", requested),
    {
      type: "PlanMigration",
      outcome: { ok: true, destDir: "/d", volumes: [{ kind: "disk", sourcePath: "/src/disk.img", sizeBytes }] },
    },
    ctx,
  );

describe("a bad event sets its migration aside", () => {
  const good = plan(10 * MiB)[0] as Extract<MigrationEvent, { type: "MigrationPlanned" }>;
  const bomb = {
    ...good,
    batchCount: 4294967296,
    volumes: [{ ...good.volumes[0]!, batchCount: 4294967296 }],
  };

  it("every plan the planner makes passes the schema's cross-field checks", () => {
    expect(MigrationPlanned.safeParse(good).success).toBe(true);
  });

  it("refuses batchCount 4294967296 in the schema, and evolve sets the migration aside instead of throwing", () => {
    const parsed = MigrationPlanned.safeParse(bomb);
    expect(parsed.success).toBe(false);
    const m = fold("m1", [...requested, bomb]);
    expect(m.status).toBe("set-aside");
    expect(m.reason).toBe("EVENT_SET_ASIDE");
    expect(m.message).toMatch(/batchCount/);
    expect(m.batches).toHaveLength(0);
  });

  it("stays set aside: later events change nothing and commands decide nothing", () => {
    const m = fold("m1", [...requested, bomb, good]);
    expect(m.status).toBe("set-aside");
    expect(decide(m, { type: "RetryFailedBatches" }, ctx)).toEqual([]);
    // A cancel is refused (the migration already ended), beside it: the fold stays set aside.
    const cancel = decide(m, { type: "CancelMigration", version: 1, commandId: "c2", migrationId: "m1" }, ctx);
    expect(cancel.map((e) => e.type === "CommandRejected" && e.reason)).toEqual(["MIGRATION_ENDED"]);
    expect(fold("m1", [...requested, bomb, good, ...cancel]).status).toBe("set-aside");
  });

  it("turns an evolve that would throw into a set-aside migration", () => {
    const hostile = { ...good, volumes: null } as unknown as MigrationEvent;
    const m = evolve(fold("m1", requested), hostile);
    expect(m.status).toBe("set-aside");
    expect(m.message).toMatch(/MigrationPlanned/);
  });

  it("sets aside a migration whose log names a batch beyond its plan", () => {
    const fact: MigrationEvent = {
      type: "ChunkBatchRetried",
      migrationId: "m1",
      at: good.at,
      version: 1,
      batch: 99,
      attempt: 1,
      notBefore: good.at,
    };
    const m = fold("m1", [...requested, good, fact]);
    expect(m.status).toBe("set-aside");
    expect(m.message).toMatch(/batch 99 is not in the plan/);
  });

  it("rejects a plan of more than MAX_BATCHES batches before it is written", () => {
    const events = plan(2 ** 50); // 1 PiB in 4 MiB batches: 2^28 batches
    expect(events).toEqual([expect.objectContaining({ type: "MigrationRejected", reason: "PLAN_TOO_LARGE" })]);
  });
});
