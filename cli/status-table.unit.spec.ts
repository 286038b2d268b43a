import { describe, expect, it } from "vitest";
import { fold, summaryOf } from "#migration";
import type { MigrationEvent } from "#schemas/index.js";
import { fmtRate } from "./args.js";
import { fmtDuration, statusRow, statusTable } from "./status-table.js";

const MiB = 1024 * 1024;
const at = (s: number): string => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const events: MigrationEvent[] = [
  {
    type: "MigrationRequested",
    migrationId: "m1",
    at: at(0),
    version: 1,
    commandId: "c1",
    vm: "web",
    source: { host: "a", volumes: [{ path: "d.img", kind: "disk" }] },
    destination: { host: "b", dir: "x" },
    options: { chunkSizeBytes: 4 * MiB, batchSizeBytes: 64 * MiB, verify: true },
  },
  { type: "MigrationRejected", migrationId: "m1", at: at(4), version: 1, reason: "SOURCE_NOT_FOUND", message: "gone" },
];

describe("dwcp status table", () => {
  it("says so when there is nothing", () => {
    expect(statusTable([])).toBe("no migrations");
  });
  it("has a header and the state, start, duration, bytes and rate of each migration", () => {
    const table = statusTable([
      statusRow(summaryOf(fold("m1", events), { messages: 2, lastSeq: 2 }), new Date(at(100))),
    ]).split("\n");
    expect(table[0]).toMatch(/^MIGRATION\s+STATE\s+VM\s+STARTED\s+DURATION\s+BYTES\s+RATE\s+BATCHES$/);
    expect(table[1]).toMatch(/^m1\s+rejected\s+web\s+2026-01-01 00:00:00Z\s+4\.0 s\s+0 B\/0 B\s+0 B\/s\s+0\/0$/);
    expect(table[2]).toBe("  m1: SOURCE_NOT_FOUND: gone");
  });
  it("prints IEC units for sizes, rates and durations", () => {
    expect(fmtRate(100 * MiB)).toBe("100.0 MiB/s");
    expect(fmtDuration(184)).toBe("3m 04s");
    expect(fmtDuration(7500)).toBe("2h 05m");
  });
});
