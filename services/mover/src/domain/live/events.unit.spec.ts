import { describe, expect, it } from "vitest";
import { MigrationEvent } from "#schemas/index.js";
import type { LiveReport } from "../../infra/vm/live.js";
import { liveEventOf, newLiveRecorder } from "./events.js";

const t0 = Date.parse("2026-01-01T00:00:00Z");

/** Feeds reports at the given ms offsets; returns the events recorded. */
function record(reports: Array<[number, LiveReport]>, sourceRunning?: boolean): MigrationEvent[] {
  let recorder = newLiveRecorder();
  const events: MigrationEvent[] = [];
  for (const [ms, r] of reports) {
    const out = liveEventOf(recorder, r, {
      migrationId: "m1",
      host: "a",
      now: new Date(t0 + ms),
      intervalMs: 1_000,
      ...(sourceRunning === undefined ? {} : { sourceRunning }),
    });
    recorder = out.recorder;
    if (out.event) events.push(MigrationEvent.parse(out.event));
  }
  return events;
}

const precopy = (pass: number): LiveReport => ({
  kind: "precopy",
  pass,
  remainingBytes: 1000 - pass,
  transferredBytes: pass * 10,
  dirtyPagesPerSec: 12.6,
  mbps: 100,
});

describe("liveEventOf", () => {
  it("records the phases in order, progress at most once per interval within a phase, mirror summed over disks", () => {
    const events = record([
      [
        0,
        {
          kind: "started",
          vm: "guest1",
          memoryMiB: 128,
          disks: [
            { id: "d0", sizeBytes: 100 },
            { id: "d1", sizeBytes: 50 },
          ],
        },
      ],
      [10, { kind: "mirror", disk: "d0", doneBytes: 10, totalBytes: 100 }],
      [20, { kind: "mirror", disk: "d1", doneBytes: 5, totalBytes: 50 }],
      [1_100, { kind: "mirror", disk: "d0", doneBytes: 100, totalBytes: 100 }],
      [1_200, { kind: "mirror-ready", elapsedMs: 1_190 }],
      [1_300, precopy(1)],
      [1_400, precopy(2)],
      [2_400, precopy(3)],
      [2_500, { kind: "switchover" }],
      [2_600, { kind: "completed", totalMs: 2_600, downtimeMs: 40, pausedMs: 55, ramTransferredBytes: 999 }],
    ]);
    expect(events.map((e) => (e.type === "LiveMigrationProgress" ? e.phase : e.type))).toEqual([
      "LiveMigrationStarted",
      "mirror",
      "mirror",
      "mirror-ready",
      "precopy",
      "precopy",
      "switchover",
      "LiveMigrationCompleted",
    ]);
    expect(events[1]).toMatchObject({ mirrorDoneBytes: 10, mirrorTotalBytes: 100, host: "a" });
    // The d1 report 10 ms later was not recorded, but it counts in the next one.
    expect(events[2]).toMatchObject({ mirrorDoneBytes: 105, mirrorTotalBytes: 150 });
    expect(events[3]).toMatchObject({ mirrorDoneBytes: 150, elapsedMs: 1_190 });
    expect(events[5]).toMatchObject({ precopyPass: 3, dirtyPagesPerSec: 13 });
    expect(events[7]).toMatchObject({
      totalMs: 2_600,
      downtimeMs: 40,
      mirrorBytes: 150,
      at: new Date(t0 + 2_600).toISOString(),
    });
  });

  it("records a failure or a cancellation with its phase, the source running unless told otherwise", () => {
    const [failed] = record([[0, { kind: "failed", phase: "precopy", reason: "x".repeat(5_000), cancelled: false }]]);
    expect(failed).toMatchObject({
      type: "LiveMigrationFailed",
      code: "LIVE_MIGRATION_FAILED",
      phase: "precopy",
      sourceRunning: true,
    });
    expect(failed?.type === "LiveMigrationFailed" && failed.message.length).toBeLessThan(1_100);
    const [cancelled] = record([[0, { kind: "failed", phase: "mirror", reason: "cancelled", cancelled: true }]], false);
    expect(cancelled).toMatchObject({ code: "LIVE_MIGRATION_CANCELLED", sourceRunning: false });
  });
});
