import { describe, expect, it } from "vitest";
import type { MigrationEvent } from "#schemas/index.js";
import { beyond, combineParts, formatReplay, ReplayFolder, type ReplayRecord } from "./view.js";

const req = (id: string, vm: string): MigrationEvent => ({
  type: "MigrationRequested",
  version: 1,
  migrationId: id,
  at: "2026-01-01T00:00:00Z",
  commandId: id,
  vm,
  source: { host: "a", volumes: [{ path: "d", kind: "disk" }] },
  destination: { host: "b", dir: "x" },
  options: { chunkSizeBytes: 65536, batchSizeBytes: 65536, verify: true },
});

const planned = (id: string): MigrationEvent => ({
  type: "MigrationPlanned",
  version: 1,
  migrationId: id,
  at: "2026-01-01T00:00:01Z",
  destDir: "/b/x",
  chunkSizeBytes: 65536,
  chunksPerBatch: 1,
  volumes: [
    {
      index: 0,
      kind: "disk",
      sourcePath: "/a/d",
      destName: "d",
      sizeBytes: 131072,
      chunkCount: 2,
      firstBatch: 0,
      batchCount: 2,
    },
  ],
  totalBytes: 131072,
  chunkCount: 2,
  batchCount: 2,
});
const transferred = (id: string, batch: number): MigrationEvent => ({
  type: "ChunkBatchTransferred",
  version: 1,
  migrationId: id,
  at: "2026-01-01T00:00:02Z",
  batch,
  attempt: 0,
  host: "a",
  chunks: [{ offset: batch * 65536, length: 65536, crc32c: 7, zero: batch === 1, wireBytes: 100 }],
  bytes: 65536,
  wireBytes: 100,
  durationMs: 1,
});

/** A log of interleaved migrations m0..m{n-1}: requested, planned, two batches, with a foreign record. */
function log(n: number): ReplayRecord[] {
  const out: ReplayRecord[] = [];
  const push = (id: string, event: MigrationEvent): number =>
    out.push({ kind: "migration", id, seq: out.length + 1, timeMs: 1000 + out.length, event });
  for (let i = 0; i < n; i++) push(`m${i}`, req(`m${i}`, i % 2 ? "web" : "db"));
  out.push({ kind: "skipped", seq: out.length + 1, timeMs: 1000 + out.length });
  for (let i = 0; i < n; i++) push(`m${i}`, planned(`m${i}`));
  for (let b = 0; b < 2; b++) for (let i = b; i < n; i++) push(`m${i}`, transferred(`m${i}`, b));
  return out;
}

describe("replay folder", () => {
  it("keeps batch states and totals, and chunk lists only when asked", () => {
    const lean = new ReplayFolder();
    const full = new ReplayFolder({ chunks: true });
    for (const r of log(3)) {
      lean.add(r);
      full.add(r);
    }
    const [l, f] = [lean.view({}).migrations[2], full.view({}).migrations[2]];
    expect(l?.batches).toEqual([
      { status: "done", attempt: 0 },
      { status: "done", attempt: 0 },
    ]);
    expect(f?.batches.map((b) => b.chunks?.map((c) => c.offset))).toEqual([[0], [65536]]);
    expect(l?.totals).toEqual({ bytes: 131072, zeroBytes: 65536, wireBytes: 200, chunks: 2, batches: 2 });
    expect(f?.totals).toEqual(l?.totals);
  });
  it("combines folders of disjoint aggregates into the one folder's view", () => {
    const records = log(7);
    const one = new ReplayFolder();
    const parts = [new ReplayFolder(), new ReplayFolder(), new ReplayFolder()];
    for (const r of records) {
      one.add(r);
      // Each folder folds its own aggregates and the skipped record lands with one of them.
      const owner = r.kind === "migration" ? Number(r.id.slice(1)) % 3 : 0;
      parts.forEach((p, k) => (k === owner ? p.add(r) : p.pass(r.seq, r.timeMs)));
    }
    for (const vm of [undefined, "web"])
      expect(
        combineParts(
          parts.map((p) => p.parts()),
          { untilSeq: 99 },
          vm,
        ),
      ).toEqual(one.view({ untilSeq: 99 }, vm));
    expect(one.view({})).toMatchObject({ events: records.length - 1, skipped: 1, lastSeq: records.length });
  });
  it("folds migrations and counts skipped records, filtering by VM", () => {
    const f = new ReplayFolder();
    f.add({ kind: "migration", id: "m1", seq: 1, timeMs: 1000, event: req("m1", "web") });
    f.add({ kind: "skipped", seq: 2, timeMs: 1001 });
    f.add({ kind: "migration", id: "m2", seq: 3, timeMs: 1002, event: req("m2", "db") });
    const all = f.view({});
    expect(all).toMatchObject({ lastSeq: 3, events: 2, skipped: 1 });
    expect(all.migrations.map((m) => [m.id, m.status])).toEqual([
      ["m1", "requested"],
      ["m2", "requested"],
    ]);
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

describe("a replay past a bad event", () => {
  it("sets that migration aside, says where and why, and folds the others", () => {
    const f = new ReplayFolder();
    const bomb = { ...planned("m1"), batchCount: 4294967296 } as MigrationEvent;
    const records: ReplayRecord[] = [
      { kind: "migration", id: "m1", seq: 1, timeMs: 1, event: req("m1", "v1") },
      { kind: "migration", id: "m2", seq: 2, timeMs: 2, event: req("m2", "v2") },
      { kind: "migration", id: "m1", seq: 3, timeMs: 3, event: bomb },
      { kind: "migration", id: "m2", seq: 4, timeMs: 4, event: planned("m2") },
      { kind: "invalid", id: "m3", seq: 5, timeMs: 5, problem: "type: invalid" },
    ];
    for (const r of records) f.add(r);
    const v = f.view({});
    const byId = new Map(v.migrations.map((m) => [m.id, m]));
    expect(byId.get("m1")?.status).toBe("set-aside");
    expect(byId.get("m2")?.status).toBe("planned");
    expect(byId.get("m3")?.status).toBe("set-aside");
    expect(v.setAside.map((s) => [s.migrationId, s.seq])).toEqual([
      ["m1", 3],
      ["m3", 5],
    ]);
    expect(formatReplay(v)).toMatch(/set aside: migration m1 at seq 3: MigrationPlanned is impossible/);
  });
});
