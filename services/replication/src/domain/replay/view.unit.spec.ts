import { describe, expect, it } from "vitest";
import type { MigrationEvent } from "../../../../../schemas/index.js";
import { beyond, formatReplay, ReplayFolder } from "./view.js";

const req = (id: string, vm: string): MigrationEvent => ({
  type: "MigrationRequested", version: 1, migrationId: id, at: "2026-01-01T00:00:00Z", commandId: id, vm,
  source: { host: "a", volumes: [{ path: "d", kind: "disk" }] }, destination: { host: "b", dir: "x" },
  options: { chunkSizeBytes: 65536, batchSizeBytes: 65536, verify: true },
});

describe("replay folder", () => {
  it("folds migrations and counts skipped records, filtering by VM", () => {
    const f = new ReplayFolder();
    f.add({ kind: "migration", id: "m1", seq: 1, timeMs: 1000, event: req("m1", "web") });
    f.add({ kind: "skipped", seq: 2, timeMs: 1001 });
    f.add({ kind: "migration", id: "m2", seq: 3, timeMs: 1002, event: req("m2", "db") });
    const all = f.view({});
    expect(all).toMatchObject({ lastSeq: 3, events: 2, skipped: 1 });
    expect(all.migrations.map((m) => [m.id, m.status])).toEqual([["m1", "requested"], ["m2", "requested"]]);
    expect(f.view({ untilSeq: 3 }, "db").migrations.map((m) => m.id)).toEqual(["m2"]);
    expect(formatReplay(f.view({ untilSeq: 3 }, "db"))).toContain("migration m2 vm=db requested");
  });
  it("stops past either bound", () => {
    expect(beyond({ untilSeq: 5 }, 6, 0)).toBe(true);
    expect(beyond({ untilSeq: 5 }, 5, 0)).toBe(false);
    expect(beyond({ untilTimeMs: 100 }, 1, 101)).toBe(true);
    expect(beyond({ untilTimeMs: 100, untilSeq: 9 }, 1, 100)).toBe(false);
  });
});
