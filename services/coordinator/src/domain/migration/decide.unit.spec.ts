import { describe, expect, it } from "vitest";
import { StartMigration, type FailureCode, type MigrationEvent } from "#schemas/index.js";
import { decide, DEFAULT_RETRY_POLICY, type MigrationCommand } from "./decide.js";
import { fold } from "./evolve.js";
import { batchRange, planVolumes } from "./planner.js";

const now = new Date("2026-01-01T00:00:10.000Z");
const ctx = { now, policy: DEFAULT_RETRY_POLICY };
const MiB = 1024 * 1024;

const start = StartMigration.parse({
  type: "StartMigration",
  version: 1,
  commandId: "c1",
  migrationId: "m1",
  vm: "vm1",
  source: {
    host: "a",
    volumes: [
      { path: "/src/disk.img", kind: "disk" },
      { path: "/src/mem.img", kind: "memory" },
    ],
  },
  destination: { host: "b", dir: "vms/vm1" },
  options: { chunkSizeBytes: 4 * MiB, batchSizeBytes: 8 * MiB },
});

/** given(events).when(command).then(events) */
function given(...history: MigrationEvent[]) {
  const state = fold("m1", history);
  return {
    state,
    when: (command: MigrationCommand) => ({
      then: (expected: Array<Partial<MigrationEvent>>) =>
        expect(decide(state, command, ctx)).toEqual(expected.map((e): unknown => expect.objectContaining(e))),
    }),
  };
}

const requested = (): MigrationEvent[] =>
  decide(fold("m1", []), start, { ...ctx, now: new Date("2026-01-01T00:00:00Z") });
const planned = (): MigrationEvent[] => {
  const h = requested();
  const outcome = {
    ok: true as const,
    destDir: "/dst/vms/vm1",
    volumes: [
      { kind: "disk" as const, sourcePath: "/src/disk.img", sizeBytes: 10 * MiB + 5 },
      { kind: "memory" as const, sourcePath: "/src/mem.img", sizeBytes: 4 * MiB },
    ],
  };
  return [...h, ...decide(fold("m1", h), { type: "PlanMigration", outcome }, ctx)];
};
const transferred = (batch: number, attempt = 0): MigrationEvent => ({
  type: "ChunkBatchTransferred",
  migrationId: "m1",
  at: now.toISOString(),
  version: 1,
  batch,
  attempt,
  host: "a",
  chunks: [{ offset: 0, length: 4 * MiB, crc32c: 1, zero: false, wireBytes: 4 * MiB }],
  bytes: 4 * MiB,
  wireBytes: 4 * MiB,
  durationMs: 5,
});
const failed = (
  batch: number,
  attempt: number,
  retryable = true,
  code: FailureCode = "CHECKSUM_MISMATCH",
  at = now,
): MigrationEvent => ({
  type: "ChunkBatchFailed",
  migrationId: "m1",
  at: at.toISOString(),
  version: 1,
  batch,
  attempt,
  host: "a",
  code,
  retryable,
  message: code === "DESTINATION_UNREACHABLE" ? "connect ECONNREFUSED" : "chunk failed its check",
});
const unreachable = (batch: number, attempt: number, at = now): MigrationEvent =>
  failed(batch, attempt, true, "DESTINATION_UNREACHABLE", at);
/** A history of batch 0 failing `n` times in a row, each failure decided on as it arrives. */
function failures(n: number, failure: (attempt: number) => MigrationEvent, h: MigrationEvent[] = [...planned()]) {
  const start = h.filter((e) => e.type === "ChunkBatchRetried").length;
  for (let a = start; a < start + n; a++) {
    const f = failure(a);
    h.push(f, ...decide(fold("m1", [...h, f]), { type: "RetryFailedBatches" }, { ...ctx, now: new Date(f.at) }));
  }
  return h;
}

describe("planner", () => {
  it("splits volumes into whole-chunk batches that never span volumes", () => {
    const plan = planVolumes(
      [
        { kind: "disk", sourcePath: "/a/disk.img", sizeBytes: 10 * MiB + 5 },
        { kind: "memory", sourcePath: "/a/mem.img", sizeBytes: 0 },
        { kind: "memory", sourcePath: "/a/m2.img", sizeBytes: 4 * MiB },
      ],
      4 * MiB,
      8 * MiB,
    );
    expect(plan).toMatchObject({ chunksPerBatch: 2, chunkCount: 4, batchCount: 3, totalBytes: 14 * MiB + 5 });
    expect(batchRange(plan, 0)).toEqual({
      batch: 0,
      volume: 0,
      firstChunk: 0,
      chunkCount: 2,
      offset: 0,
      length: 8 * MiB,
    });
    expect(batchRange(plan, 1)).toEqual({
      batch: 1,
      volume: 0,
      firstChunk: 2,
      chunkCount: 1,
      offset: 8 * MiB,
      length: 2 * MiB + 5,
    });
    expect(batchRange(plan, 2)).toMatchObject({ volume: 2, firstChunk: 0, length: 4 * MiB });
    expect(batchRange(plan, 3)).toBeUndefined();
  });

  it("sizes batches of a sparse volume by the data they hold, covering every chunk once", () => {
    // 64 chunks of 1 MiB; data only in chunks 0-3 and 60-63 (a region per chunk).
    const dataBytes = Array.from({ length: 64 }, (_, i) => (i < 4 || i >= 60 ? MiB : 0));
    const plan = planVolumes(
      [{ kind: "disk", sourcePath: "/a/d.img", sizeBytes: 64 * MiB, dataMap: { regionBytes: MiB, dataBytes } }],
      MiB,
      4 * MiB,
    );
    // Uniform batching would need 16 batches; by data: the holes ride along with chunks 0-3
    // until chunk 60's data would overflow the batch.
    expect(plan.volumes[0]?.batchChunks).toEqual([60, 4]);
    expect(plan.batchCount).toBe(2);
    const ranges = [0, 1].map((b) => batchRange(plan, b));
    expect(ranges).toEqual([
      { batch: 0, volume: 0, firstChunk: 0, chunkCount: 60, offset: 0, length: 60 * MiB },
      { batch: 1, volume: 0, firstChunk: 60, chunkCount: 4, offset: 60 * MiB, length: 4 * MiB },
    ]);
    expect(batchRange(plan, 2)).toBeUndefined();
  });

  it("sizes a sparse volume's batches by a third of the data left: large first, small last", () => {
    // 2 GiB in 4 MiB chunks, every 10th chunk data (~205 MiB): 64 MiB batches would make 4,
    // with the last one short. Each batch takes a third of the data left, at least 16 MiB, so
    // the batches that end the migration are small and none of them runs long alone.
    const dataBytes = Array.from({ length: 512 }, (_, i) => (i % 10 === 0 ? 4 * MiB : 0));
    const plan = planVolumes(
      [{ kind: "disk", sourcePath: "/a/d.img", sizeBytes: 2048 * MiB, dataMap: { regionBytes: 4 * MiB, dataBytes } }],
      4 * MiB,
      64 * MiB,
    );
    const sizes = plan.volumes[0]?.batchChunks ?? [];
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(512);
    expect(sizes.length).toBeGreaterThanOrEqual(4);
    const dataPer = sizes.map((n, b) => {
      const first = sizes.slice(0, b).reduce((x, y) => x + y, 0);
      return dataBytes.slice(first, first + n).reduce((x, y) => x + y, 0);
    });
    // Within a chunk of a third of what was left, and never growing.
    let left = dataBytes.reduce((x, y) => x + y, 0);
    for (const [b, d] of dataPer.entries()) {
      const share = Math.min(64 * MiB, Math.max(16 * MiB, Math.ceil(left / 3)));
      expect(d, `batch ${b}`).toBeLessThanOrEqual(share);
      if (b < dataPer.length - 1) expect(d, `batch ${b}`).toBeGreaterThan(share - 4 * MiB - 1);
      if (b > 0) expect(d).toBeLessThanOrEqual((dataPer[b - 1] ?? 0) + 4 * MiB);
      left -= d;
    }
    expect(dataPer.at(-1)).toBeLessThanOrEqual(16 * MiB);
  });

  it("caps a batch of holes at 16 uniform batches and keeps dense volumes uniform", () => {
    const holes = planVolumes(
      [
        {
          kind: "disk",
          sourcePath: "/a/h.img",
          sizeBytes: 100 * MiB,
          dataMap: { regionBytes: 4 * MiB, dataBytes: new Array<number>(25).fill(0) },
        },
      ],
      MiB,
      2 * MiB,
    );
    expect(holes.volumes[0]?.batchChunks).toEqual([32, 32, 32, 4]);
    const dense = planVolumes(
      [
        {
          kind: "disk",
          sourcePath: "/a/d.img",
          sizeBytes: 8 * MiB,
          dataMap: { regionBytes: MiB, dataBytes: new Array<number>(8).fill(MiB) },
        },
      ],
      MiB,
      2 * MiB,
    );
    expect(dense.volumes[0]?.batchChunks).toBeUndefined();
    expect(dense.batchCount).toBe(4);
  });
});

describe("decide: StartMigration", () => {
  it("records the request", () => {
    given()
      .when(start)
      .then([{ type: "MigrationRequested", commandId: "c1", vm: "vm1" }]);
  });
  it("is idempotent for the same command", () => {
    given(...requested())
      .when(start)
      .then([]);
  });
  it("refuses another command's id beside the migration, which it leaves as it was", () => {
    const history = [...planned(), transferred(0)];
    const other = { ...start, commandId: "c2" };
    given(...history)
      .when(other)
      .then([{ type: "CommandRejected", commandId: "c2", command: "StartMigration", reason: "MIGRATION_ID_IN_USE" }]);
    const refused = decide(fold("m1", history), other, ctx);
    const after = fold("m1", [...history, ...refused]);
    const before = fold("m1", history);
    expect({ ...after, eventCount: 0, refusedCommands: undefined }).toEqual({ ...before, eventCount: 0 });
    expect(after.refusedCommands).toEqual({
      count: 1,
      recent: [{ commandId: "c2", reason: "MIGRATION_ID_IN_USE", at: now.toISOString() }],
    });
    // Redelivered, the same command is not refused twice.
    given(...history, ...refused)
      .when(other)
      .then([]);
  });
  it("refuses a malformed command naming an existing migration beside it", () => {
    const reject = {
      type: "RejectCommand" as const,
      commandId: "c3",
      command: "StartMigration" as const,
      reason: "SCHEMA_INVALID" as const,
      message: "vm: Required",
    };
    given(...requested())
      .when(reject)
      .then([{ type: "CommandRejected", commandId: "c3", reason: "SCHEMA_INVALID" }]);
    given()
      .when(reject)
      .then([{ type: "MigrationRejected", commandId: "c3", reason: "SCHEMA_INVALID" }]);
  });
  it("rejects two volumes with the same file name", () => {
    const dup = {
      ...start,
      source: {
        host: "a",
        volumes: [
          { path: "/x/d.img", kind: "disk" as const },
          { path: "/y/d.img", kind: "disk" as const },
        ],
      },
    };
    given()
      .when(dup)
      .then([{ type: "MigrationRequested" }, { type: "MigrationRejected", reason: "DUPLICATE_DESTINATION" }]);
  });
});

describe("decide: planning", () => {
  it("plans batches from probed sizes", () => {
    const events = planned();
    expect(events.at(-1)).toMatchObject({
      type: "MigrationPlanned",
      batchCount: 3,
      chunkCount: 4,
      destDir: "/dst/vms/vm1",
    });
  });
  it("rejects with the probe's reason", () => {
    given(...requested())
      .when({ type: "PlanMigration", outcome: { ok: false, reason: "PATH_OUTSIDE_ROOT", message: "no" } })
      .then([{ type: "MigrationRejected", reason: "PATH_OUTSIDE_ROOT" }]);
  });
  it("does not plan twice", () => {
    given(...planned())
      .when({ type: "PlanMigration", outcome: { ok: true, destDir: "/d", volumes: [] } })
      .then([]);
  });
});

describe("decide: retries", () => {
  it("retries a retryable failure with backoff", () => {
    given(...planned(), failed(1, 0))
      .when({ type: "RetryFailedBatches" })
      .then([{ type: "ChunkBatchRetried", batch: 1, attempt: 1, notBefore: "2026-01-01T00:00:10.500Z" }]);
  });
  it("fails the migration when attempts run out", () => {
    const h: MigrationEvent[] = [...planned()];
    for (let a = 0; a < DEFAULT_RETRY_POLICY.maxAttempts - 1; a++) {
      h.push(failed(0, a), ...decide(fold("m1", [...h, failed(0, a)]), { type: "RetryFailedBatches" }, ctx));
    }
    given(...h, failed(0, DEFAULT_RETRY_POLICY.maxAttempts - 1))
      .when({ type: "RetryFailedBatches" })
      .then([{ type: "MigrationFailed", code: "RETRIES_EXHAUSTED", batch: 0 }]);
  });
  it("fails at once on a permanent failure", () => {
    given(...planned(), failed(2, 0, false, "AUTH_FAILED"))
      .when({ type: "RetryFailedBatches" })
      .then([{ type: "MigrationFailed", code: "AUTH_FAILED" }]);
  });
  it("retries an unreachable destination past maxAttempts, a few seconds apart", () => {
    const h = failures(DEFAULT_RETRY_POLICY.maxAttempts + 3, (a) => unreachable(0, a));
    const a = DEFAULT_RETRY_POLICY.maxAttempts + 3;
    given(...h, unreachable(0, a))
      .when({ type: "RetryFailedBatches" })
      .then([{ type: "ChunkBatchRetried", batch: 0, attempt: a + 1, notBefore: "2026-01-01T00:00:15.000Z" }]);
  });
  it("fails once the destination has been unreachable for the limit", () => {
    const first = new Date(now.getTime() - DEFAULT_RETRY_POLICY.unreachableLimitMs);
    const h = failures(1, (a) => unreachable(0, a, first));
    given(...h, unreachable(0, 1))
      .when({ type: "RetryFailedBatches" })
      .then([{ type: "MigrationFailed", code: "RETRIES_EXHAUSTED", batch: 0 }]);
    const [event] = decide(fold("m1", [...h, unreachable(0, 1)]), { type: "RetryFailedBatches" }, ctx);
    expect(event?.type === "MigrationFailed" && event.message).toContain("destination unreachable for 300 s");
  });
  it("counts attempts again once the destination answers and the batch still fails", () => {
    const first = new Date(now.getTime() - DEFAULT_RETRY_POLICY.unreachableLimitMs);
    const h = failures(DEFAULT_RETRY_POLICY.maxAttempts - 1, (a) => failed(0, a));
    failures(3, (a) => unreachable(0, a, first), h);
    // The run of unreachable failures ended: the limit no longer applies, the attempts do.
    given(...h, failed(0, DEFAULT_RETRY_POLICY.maxAttempts + 2))
      .when({ type: "RetryFailedBatches" })
      .then([{ type: "MigrationFailed", code: "RETRIES_EXHAUSTED", batch: 0 }]);
  });
  it("ignores a failure report from a stale attempt", () => {
    const g = given(
      ...planned(),
      failed(0, 0),
      {
        type: "ChunkBatchRetried",
        migrationId: "m1",
        at: now.toISOString(),
        version: 1,
        batch: 0,
        attempt: 1,
        notBefore: now.toISOString(),
      },
      failed(0, 0),
    );
    expect(g.state.batches[0]).toMatchObject({ status: "pending", attempt: 1 });
  });
});

describe("decide: completion and cancel", () => {
  it("completes only when every batch is done, with the folded totals", () => {
    const ok = {
      ok: true as const,
      volumes: [
        { destPath: "/dst/vms/vm1/disk.img", crc32c: 7 },
        { destPath: "/dst/vms/vm1/mem.img", crc32c: 8 },
      ],
    };
    given(...planned(), transferred(0))
      .when({ type: "FinalizeMigration", outcome: ok })
      .then([]);
    given(...planned(), transferred(0), transferred(1), transferred(2), transferred(1))
      .when({ type: "FinalizeMigration", outcome: ok })
      .then([
        {
          type: "MigrationCompleted",
          totals: {
            bytes: 12 * MiB,
            zeroBytes: 0,
            wireBytes: 12 * MiB,
            chunks: 3,
            batches: 3,
            zeroSkippedBytes: 0,
            packedInBytes: 0,
            packedOutBytes: 0,
            baseReusedBytes: 0,
          },
          durationMs: 10_000,
        },
      ]);
  });
  it("cancels an active migration once", () => {
    const cancel = { type: "CancelMigration" as const, version: 1 as const, commandId: "x", migrationId: "m1" };
    given(...planned())
      .when(cancel)
      .then([{ type: "MigrationCancelled", commandId: "x" }]);
    const cancelled = decide(fold("m1", planned()), cancel, ctx);
    given(...planned(), ...cancelled)
      .when(cancel)
      .then([]);
    given(...planned(), ...cancelled, transferred(0))
      .when({ type: "RetryFailedBatches" })
      .then([]);
    given()
      .when(cancel)
      .then([{ type: "CommandRejected", commandId: "x", command: "CancelMigration", reason: "UNKNOWN_MIGRATION" }]);
    expect(fold("m1", decide(fold("m1", []), cancel, ctx)).status, "an unknown id stays unknown").toBe("none");
    // Another cancel of a migration that already ended is refused, not silently dropped.
    given(...planned(), ...cancelled)
      .when({ ...cancel, commandId: "y" })
      .then([{ type: "CommandRejected", commandId: "y", reason: "MIGRATION_ENDED" }]);
  });
});

describe("decide: SetMigrationOptions", () => {
  const set = (limit: number | null, commandId = "s1") => ({
    type: "SetMigrationOptions" as const,
    version: 1 as const,
    commandId,
    migrationId: "m1",
    bandwidthLimitBytesPerSec: limit,
  });
  it("changes a running migration's limit once, and later work carries it", () => {
    given(...planned())
      .when(set(8 * MiB))
      .then([{ type: "MigrationOptionsChanged", commandId: "s1", bandwidthLimitBytesPerSec: 8 * MiB }]);
    const changed = decide(fold("m1", planned()), set(8 * MiB), ctx);
    expect(fold("m1", [...planned(), ...changed]).options?.bandwidthLimitBytesPerSec).toBe(8 * MiB);
    given(...planned(), ...changed)
      .when(set(8 * MiB))
      .then([]);
    // null lifts the limit: the event carries none, and the fold forgets it.
    const lifted = decide(fold("m1", [...planned(), ...changed]), set(null, "s2"), ctx);
    expect(lifted).toHaveLength(1);
    expect(lifted[0]).toMatchObject({ type: "MigrationOptionsChanged", commandId: "s2" });
    expect(lifted[0]).not.toHaveProperty("bandwidthLimitBytesPerSec");
    expect(fold("m1", [...planned(), ...changed, ...lifted]).options?.bandwidthLimitBytesPerSec).toBeUndefined();
  });
  it("changes the weight or priority and keeps what the command leaves out", () => {
    const limited = decide(fold("m1", planned()), set(8 * MiB), ctx);
    const { bandwidthLimitBytesPerSec: _l, ...noLimit } = set(null, "s2");
    const weighted = decide(fold("m1", [...planned(), ...limited]), { ...noLimit, weight: 3, priority: -2 }, ctx);
    expect(weighted).toEqual([
      expect.objectContaining({ bandwidthLimitBytesPerSec: 8 * MiB, weight: 3, priority: -2, commandId: "s2" }),
    ]);
    const { bandwidthLimitBytesPerSec: _m, ...again } = set(null, "s3");
    const both = decide(fold("m1", [...planned(), ...limited, ...weighted]), { ...again, priority: 5 }, ctx);
    expect(both).toEqual([expect.objectContaining({ bandwidthLimitBytesPerSec: 8 * MiB, weight: 3, priority: 5 })]);
    const state = fold("m1", [...planned(), ...limited, ...weighted, ...both]);
    expect(state.options).toMatchObject({ bandwidthLimitBytesPerSec: 8 * MiB, weight: 3, priority: 5 });
  });
  it("refuses an unknown or ended migration beside it, without changing it", () => {
    given()
      .when(set(1))
      .then([{ type: "CommandRejected", command: "SetMigrationOptions", reason: "UNKNOWN_MIGRATION" }]);
    const cancelled = decide(
      fold("m1", planned()),
      { type: "CancelMigration", version: 1, commandId: "x", migrationId: "m1" },
      ctx,
    );
    const refused = decide(fold("m1", [...planned(), ...cancelled]), set(1), ctx);
    expect(refused).toEqual([expect.objectContaining({ type: "CommandRejected", reason: "MIGRATION_ENDED" })]);
    const after = fold("m1", [...planned(), ...cancelled, ...refused]);
    expect(after.status).toBe("cancelled");
    expect(after.options?.bandwidthLimitBytesPerSec).toBeUndefined();
  });
});
