import { describe, expect, it } from "vitest";
import type { BatchProgress, MigrationSummary } from "#schemas/index.js";
import { initialMigration, type Migration } from "#migration";
import { progressBar, renderTop } from "./top-view.js";
import { RateTracker, topMigration, topMover, topReplication, type TopSnapshot } from "./top-model.js";

const MiB = 1024 * 1024;
const t0 = Date.parse("2026-12-06T00:00:00Z");
const at = (ms: number): Date => new Date(t0 + ms);

const summary = (id: string, o: Partial<MigrationSummary> = {}): MigrationSummary => ({
  type: "MigrationSummary",
  version: 1,
  migrationId: id,
  state: "running",
  vm: "web-1",
  requestedAt: at(0).toISOString(),
  bytes: 0,
  wireBytes: 0,
  zeroBytes: 0,
  totalBytes: 64 * MiB,
  batchesDone: 0,
  batches: 4,
  messages: 3,
  lastSeq: 3,
  ...o,
});

const running = (id: string): Migration => ({
  ...initialMigration(id),
  status: "running",
  batches: [
    { status: "done", attempt: 0 },
    { status: "pending", attempt: 1 },
    { status: "pending", attempt: 0 },
    { status: "pending", attempt: 0 },
  ],
});

const report = (id: string, batch: number, attempt: number, bytes: number, ms: number): BatchProgress => ({
  type: "BatchProgress",
  version: 1,
  migrationId: id,
  batch,
  attempt,
  host: "a",
  chunks: 1,
  bytes,
  dataBytes: bytes,
  zeroBytes: 0,
  wireBytes: bytes,
  at: at(ms).toISOString(),
});

describe("dwcp top's figures", () => {
  it("a running migration's rate comes from its progress reports, its ETA from what is left", () => {
    const rates = new RateTracker(t0);
    // Batch 1 at attempt 1 moves 4 MiB a second; the first report only sets the base.
    for (let i = 0; i <= 4; i++)
      rates.onProgress(report("m", 1, 1, i * 4 * MiB, 1000 + i * 1000), t0 + 1000 + i * 1000);
    // A report of an earlier attempt counts for the rate of that moment but not as in flight.
    const m = topMigration(summary("m", { bytes: 16 * MiB }), running("m"), rates, at(5000));
    expect(m.inFlightBytes).toBe(16 * MiB);
    expect(m.progress).toBe(0.5);
    expect(m.rateSource).toBe("progress");
    expect(m.rateBytesPerSecond).toBe((16 * MiB) / 5);
    expect(m.etaSeconds).toBeCloseTo((32 * MiB) / ((16 * MiB) / 5));
    expect(m.retries).toBe(1);
    expect(topMover("a", undefined, rates, at(5000))).toMatchObject({
      health: "gone",
      sendBytesPerSecond: (16 * MiB) / 5,
    });
  });

  it("an ended migration has its average rate, no ETA and no retries read", () => {
    const m = topMigration(
      summary("m", { state: "completed", bytes: 64 * MiB, endedAt: at(8000).toISOString(), batchesDone: 4 }),
      undefined,
      new RateTracker(t0),
      at(60_000),
    );
    expect(m).toMatchObject({ progress: 1, rateSource: "average", rateBytesPerSecond: 8 * MiB, retries: undefined });
    expect(m.etaSeconds).toBeUndefined();
  });

  it("a mover is stale after three missed heartbeats; RPO is the newest snapshot's age", () => {
    const reg = (ms: number) => ({
      version: 1 as const,
      host: "a",
      dataAddress: "127.0.0.1:7000",
      pid: 42,
      startedAt: at(0).toISOString(),
      heartbeatAt: at(ms).toISOString(),
    });
    const rates = new RateTracker(t0);
    expect(topMover("a", reg(10_000), rates, at(20_000)).health).toBe("ok");
    expect(topMover("a", reg(10_000), rates, at(25_001)).health).toBe("stale");
    expect(topReplication("db", 3, at(0).toISOString(), at(90_000)).rpoSeconds).toBe(90);
    expect(topReplication("db", 0, undefined, at(90_000)).rpoSeconds).toBeUndefined();
  });
});

describe("dwcp top's screen", () => {
  it("draws a floor-rounded bar: full only when done", () => {
    expect(progressBar(0.999)).toBe("[#########.]  99%");
    expect(progressBar(1)).toBe("[##########] 100%");
    expect(progressBar(undefined).trim()).toBe("");
  });

  it("fits 80x24 with many migrations, long ids and every section, running ones first", () => {
    const rates = new RateTracker(t0);
    const now = at(30_000);
    const ended = Array.from({ length: 40 }, (_, i) =>
      topMigration(
        summary(`ended-${i}-${"x".repeat(60)}`, { state: "completed", bytes: 64 * MiB, endedAt: at(i).toISOString() }),
        undefined,
        rates,
        now,
      ),
    );
    const snapshot: TopSnapshot = {
      at: now.toISOString(),
      migrations: [...ended, topMigration(summary("live"), running("live"), rates, now)],
      movers: ["a", "b", "c"].map((h) => topMover(h, undefined, rates, now)),
      replication: [topReplication("db", 2, at(0).toISOString(), now)],
      consumers: [
        {
          stream: "DWCP_CMD",
          durable: "coordinator",
          numPending: 12,
          numAckPending: 1,
          numRedelivered: 0,
          numWaiting: 1,
        },
      ],
      problems: ["DWCP_WORK_c/mover: consumer not found"],
    };
    const lines = renderTop(snapshot, { width: 80, height: 24, source: "nats://127.0.0.1:4222" });
    expect(lines.length).toBeLessThanOrEqual(24);
    for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(80);
    const header = lines.findIndex((l) => l.startsWith("MIGRATION"));
    expect(lines[header + 1]).toMatch(/^live\s+running/);
    // The newest ended one next; the rest counted.
    expect(lines[header + 2]).toMatch(/^ended-39-x+~ completed/);
    expect(lines.some((l) => /\.\.\. \d+ more/.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith("DWCP_CMD/coordinator") && / 12 /.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith("db "))).toBe(true);
    expect(lines.some((l) => l.startsWith("! DWCP_WORK_c/mover"))).toBe(true);
  });
});
