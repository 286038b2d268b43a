import { describe, expect, it } from "vitest";
import {
  Command,
  LiveMigrate,
  LiveMigrationProgress,
  MigrationEvent,
  StartMigration,
  type MigrationEvent as Event,
} from "#schemas/index.js";
import { parseCommand } from "../parse-command.js";
import { decide, DEFAULT_RETRY_POLICY } from "./decide.js";
import { fold } from "./evolve.js";
import { isLive, liveWorkId, liveWorkItem } from "./live.js";
import { foldTrusted, refusal, type Producer } from "./producers.js";

const t0 = new Date("2026-01-01T00:00:00.000Z");
const ctx = (ms = 0) => ({ now: new Date(t0.getTime() + ms), policy: DEFAULT_RETRY_POLICY });
const at = (ms: number): string => new Date(t0.getTime() + ms).toISOString();

const liveStart = (over: Record<string, unknown> = {}): StartMigration =>
  StartMigration.parse({
    type: "StartMigration",
    version: 1,
    commandId: "c1",
    migrationId: "m1",
    vm: "guest1",
    mode: "live",
    source: { host: "a", volumes: [] },
    destination: { host: "b", dir: "vms/guest1" },
    live: { downtimeLimitMs: 300, autoConverge: true },
    ...over,
  });

const requested = (): Event[] => decide(fold("m1", []), liveStart(), ctx());
const base = (ms: number) => ({ migrationId: "m1", at: at(ms), version: 1 as const, host: "a" });
const started: Event = {
  type: "LiveMigrationStarted",
  ...base(100),
  vm: "guest1",
  memoryMiB: 128,
  disks: [{ id: "disk0", sizeBytes: 64 << 20 }],
};
const progress = (ms: number, phase: LiveMigrationProgress["phase"], more: object = {}): Event => ({
  type: "LiveMigrationProgress",
  ...base(ms),
  phase,
  ...more,
});
const completed: Event = {
  type: "LiveMigrationCompleted",
  ...base(5_000),
  totalMs: 4_900,
  downtimeMs: 42,
  pausedMs: 60,
  ramTransferredBytes: 130 << 20,
  mirrorBytes: 64 << 20,
};
const failed = (code: "LIVE_MIGRATION_FAILED" | "LIVE_MIGRATION_CANCELLED"): Event => ({
  type: "LiveMigrationFailed",
  ...base(3_000),
  code,
  phase: "precopy",
  message: "the destination went away",
  sourceRunning: true,
});

describe("live StartMigration schema", () => {
  it("takes mode live with a VM, no volumes and bounded live options", () => {
    const c = liveStart();
    expect(c.mode).toBe("live");
    expect(c.live).toEqual({ downtimeLimitMs: 300, autoConverge: true });
  });

  it("refuses volumes in a live migration, live options in a file one, and unbounded options", () => {
    const withVolume = { source: { host: "a", volumes: [{ path: "/x.img", kind: "disk" }] } };
    expect(() => liveStart(withVolume)).toThrow(/live migration names no volumes/);
    expect(() => liveStart({ mode: undefined, ...withVolume })).toThrow(/live options need mode/);
    expect(() => liveStart({ live: { downtimeLimitMs: 60_001 } })).toThrow();
    expect(() => liveStart({ live: { timeoutMs: 10 } })).toThrow();
    expect(() => liveStart({ mode: "hot" })).toThrow();
  });

  it("keeps refusing a file migration without volumes as EMPTY_VOLUMES", () => {
    const raw = { ...liveStart(), mode: undefined, live: undefined };
    const parsed = parseCommand(new TextEncoder().encode(JSON.stringify(raw)));
    expect(parsed).toMatchObject({ ok: false, reason: "EMPTY_VOLUMES" });
    expect(Command.safeParse(liveStart()).success).toBe(true);
  });
});

describe("decide: live migration", () => {
  it("records the request with its mode and options, and hands out one work item to the source mover", () => {
    const events = requested();
    expect(events).toEqual([
      expect.objectContaining({
        type: "MigrationRequested",
        mode: "live",
        live: { downtimeLimitMs: 300, autoConverge: true },
      }),
    ]);
    for (const e of events) MigrationEvent.parse(e);
    const m = fold("m1", events);
    expect(isLive(m)).toBe(true);
    expect(m.live).toEqual({ phase: "requested", progressCount: 0 });
    const item = liveWorkItem(m);
    expect(LiveMigrate.parse(item)).toEqual({
      type: "LiveMigrate",
      version: 1,
      migrationId: "m1",
      vm: "guest1",
      sourceHost: "a",
      destHost: "b",
      destDir: "vms/guest1",
      live: { downtimeLimitMs: 300, autoConverge: true },
    });
    expect(liveWorkId("m1")).toBe("m1.live");
  });

  it("hands the migration's compression option to the mover with the live work item", () => {
    const start = liveStart({ options: { compression: "zstd" } });
    const m = fold("m1", decide(fold("m1", []), start, ctx()));
    expect(LiveMigrate.parse(liveWorkItem(m))).toMatchObject({ compression: "zstd" });
  });

  it("plans no batches for a live migration, and a file migration has no live work item", () => {
    const m = fold("m1", requested());
    const outcome = {
      ok: true as const,
      destDir: "/d",
      volumes: [{ kind: "disk" as const, sourcePath: "/s", sizeBytes: 1 }],
    };
    expect(decide(m, { type: "PlanMigration", outcome }, ctx())).toEqual([]);
    const file = StartMigration.parse({
      ...liveStart(),
      mode: undefined,
      live: undefined,
      source: { host: "a", volumes: [{ path: "/x.img", kind: "disk" }] },
    });
    expect(liveWorkItem(fold("m1", decide(fold("m1", []), file, ctx())))).toBeUndefined();
  });

  it("refuses a live migration to the host it runs on", () => {
    const events = decide(fold("m1", []), liveStart({ destination: { host: "a", dir: "x" } }), ctx());
    expect(events.map((e) => e.type)).toEqual(["MigrationRequested", "MigrationRejected"]);
    expect(fold("m1", events)).toMatchObject({ status: "rejected", reason: "SAME_HOST_AND_DIR" });
  });

  it("takes a redelivered start once and refuses another command's reuse of the id", () => {
    const m = fold("m1", requested());
    expect(decide(m, liveStart(), ctx())).toEqual([]);
    expect(decide(m, liveStart({ commandId: "c2" }), ctx())).toEqual([
      expect.objectContaining({ type: "CommandRejected", reason: "MIGRATION_ID_IN_USE" }),
    ]);
  });

  it("cancels a running live migration; the mover's rollback report keeps the outcome", () => {
    const m = fold("m1", [...requested(), started]);
    const cancel = decide(m, { type: "CancelMigration", version: 1, commandId: "k1", migrationId: "m1" }, ctx(2_000));
    expect(cancel).toEqual([expect.objectContaining({ type: "MigrationCancelled" })]);
    const after = fold("m1", [...requested(), started, ...cancel, failed("LIVE_MIGRATION_CANCELLED")]);
    expect(after).toMatchObject({ status: "cancelled", reason: "CANCELLED" });
    expect(after.live).toMatchObject({ failedPhase: "precopy", sourceRunning: true });
    expect(liveWorkItem(after)).toBeUndefined();
  });
});

describe("evolve: live migration", () => {
  it("folds started, progress and completion with the total time and downtime", () => {
    const history = [
      ...requested(),
      started,
      progress(200, "mirror", { mirrorDoneBytes: 1 << 20, mirrorTotalBytes: 64 << 20 }),
      progress(900, "mirror-ready", { elapsedMs: 800 }),
      progress(1_500, "precopy", {
        precopyPass: 2,
        remainingBytes: 4096,
        transferredBytes: 9 << 20,
        dirtyPagesPerSec: 300,
      }),
      progress(1_000, "mirror", { mirrorDoneBytes: 2 << 20, mirrorTotalBytes: 64 << 20 }),
      progress(4_000, "switchover"),
      completed,
      progress(5_100, "precopy", { precopyPass: 9 }),
    ];
    for (const e of history) MigrationEvent.parse(e);
    const steps = history.map((_, i) => fold("m1", history.slice(0, i + 1)));
    expect(steps.map((m) => m.status)).toEqual([
      "requested",
      "running",
      "running",
      "running",
      "running",
      "running",
      "running",
      "completed",
      "completed",
    ]);
    expect(steps[3]?.live?.progress).toMatchObject({ phase: "mirror-ready", elapsedMs: 800 });
    // A late mirror report after precopy began changes nothing.
    expect(steps[5]?.live?.progress).toMatchObject({ phase: "precopy", precopyPass: 2, dirtyPagesPerSec: 300 });
    const done = steps[8];
    expect(done).toMatchObject({ status: "completed", endedAt: at(5_000) });
    expect(done?.live).toMatchObject({
      phase: "completed",
      totalMs: 4_900,
      downtimeMs: 42,
      pausedMs: 60,
      progressCount: 4,
    });
    expect(liveWorkItem(done!)).toBeUndefined();
  });

  it("fails with the mover's code and phase, the source still running", () => {
    const m = fold("m1", [...requested(), started, failed("LIVE_MIGRATION_FAILED")]);
    expect(m).toMatchObject({
      status: "failed",
      reason: "LIVE_MIGRATION_FAILED",
      message: "the destination went away",
    });
    expect(m.live).toMatchObject({ phase: "failed", failedPhase: "precopy", sourceRunning: true });
  });

  it("ignores progress before the start and sets aside a live event of a file migration", () => {
    expect(fold("m1", [...requested(), progress(50, "mirror")]).live?.progressCount).toBe(0);
    const file = StartMigration.parse({
      ...liveStart(),
      mode: undefined,
      live: undefined,
      source: { host: "a", volumes: [{ path: "/x.img", kind: "disk" }] },
    });
    const m = fold("m1", [...decide(fold("m1", []), file, ctx()), started]);
    expect(m.status).toBe("set-aside");
  });

  it("bounds progress events: a phase outside the enum or a negative figure fails validation", () => {
    expect(LiveMigrationProgress.safeParse({ ...progress(1, "mirror"), phase: "warp" }).success).toBe(false);
    expect(LiveMigrationProgress.safeParse({ ...progress(1, "mirror"), mirrorDoneBytes: -1 }).success).toBe(false);
  });
});

describe("producers: live events", () => {
  const by = (role: string): Producer => ({ kind: "signed", principal: { role } });

  it("are taken only from the source host's mover naming that host", () => {
    const m = fold("m1", requested());
    expect(refusal(m, started, by("mover-a"))).toBeUndefined();
    expect(refusal(m, started, by("mover-b"))).toMatch(/may not record LiveMigrationStarted/);
    expect(refusal(m, started, by("coordinator"))).toMatch(/may not record/);
    expect(refusal(m, { ...started, host: "b" }, by("mover-a"))).toMatch(/may not record/);
    expect(refusal(fold("m1", []), started, by("mover-a"))).toMatch(/before the migration was requested/);
  });

  it("a forged completion from the destination mover is ignored input", () => {
    const coordinator = by("coordinator");
    const history = [
      ...requested().map((event) => ({ event, provenance: coordinator })),
      { event: started, provenance: by("mover-a") },
    ];
    const m = foldTrusted(
      "m1",
      [...history, { event: completed, provenance: by("mover-b") }].map((e, i) => ({ ...e, seq: i + 1 })),
    );
    expect(m.status).toBe("running");
    expect(m.ignored?.count).toBe(1);
  });
});
