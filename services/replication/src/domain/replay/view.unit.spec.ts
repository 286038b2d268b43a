import { describe, expect, it } from "vitest";
import type { MigrationEvent } from "#schemas/index.js";
import type { ReplicationEvent } from "#schemas/replication.js";
import { beyond, combineParts, formatReplay, ReplayFolder, type ReplayRecord } from "./view.js";

/** Records as an insecure reader (DWCP_EVENTS_UNSIGNED=on) sees them: every producer taken at its word. */
const insecure = { provenance: { kind: "insecure" } } as const;
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
    out.push({ kind: "migration", id, seq: out.length + 1, timeMs: 1000 + out.length, event, ...insecure });
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
    expect(l?.totals).toEqual({
      bytes: 131072,
      zeroBytes: 65536,
      wireBytes: 200,
      chunks: 2,
      batches: 2,
      zeroSkippedBytes: 65536,
      packedInBytes: 0,
      packedOutBytes: 0,
      baseReusedBytes: 0,
    });
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
    f.add({ kind: "migration", id: "m1", seq: 1, timeMs: 1000, event: req("m1", "web"), ...insecure });
    f.add({ kind: "skipped", seq: 2, timeMs: 1001 });
    f.add({ kind: "migration", id: "m2", seq: 3, timeMs: 1002, event: req("m2", "db"), ...insecure });
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
      { kind: "migration", id: "m1", seq: 1, timeMs: 1, event: req("m1", "v1"), ...insecure },
      { kind: "migration", id: "m2", seq: 2, timeMs: 2, event: req("m2", "v2"), ...insecure },
      { kind: "migration", id: "m1", seq: 3, timeMs: 3, event: bomb, ...insecure },
      { kind: "migration", id: "m2", seq: 4, timeMs: 4, event: planned("m2"), ...insecure },
      { kind: "invalid", id: "m3", seq: 5, timeMs: 5, problem: "type: invalid", ...insecure },
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

describe("a replay by the producer rules", () => {
  const coordinator = { provenance: { kind: "signed", principal: { role: "coordinator" } } } as const;
  const cli = { provenance: { kind: "signed", principal: { role: "cli" } } } as const;
  const unsigned = { provenance: { kind: "unverified", reason: "unsigned" } } as const;
  const completed = (id: string): MigrationEvent => ({
    type: "MigrationCompleted",
    migrationId: id,
    at: "2026-11-26T00:00:09.000Z",
    version: 1,
    totals: { bytes: 100e9, zeroBytes: 0, wireBytes: 100e9, chunks: 1, batches: 1 },
    durationMs: 1,
    volumes: [],
  });
  const snapshot = {
    type: "SnapshotCommitted",
    vm: "vmx",
    at: "2026-11-26T00:00:10.000Z",
    version: 1,
    snapshotId: "s1",
    takenAt: "2026-11-26T00:00:10.000Z",
    source: { host: "a", paths: ["disk.img"] },
    destination: { host: "b", store: "/tmp/evil-store" },
    manifest: "manifests/x.json",
    manifestBlake3: "0".repeat(64),
    volumes: [{ name: "disk.img", sizeBytes: 4096, chunkCount: 1 }],
    bytes: 4096,
    changedBytes: 4096,
    wireBytes: 4096,
    durationMs: 1,
  } as unknown as ReplicationEvent;

  it("folds only what each producer may make, lists the rest with why, and sets aside only on trusted junk", () => {
    const f = new ReplayFolder();
    const records: ReplayRecord[] = [
      { kind: "migration", id: "m1", seq: 1, timeMs: 1, event: req("m1", "v1"), ...coordinator },
      { kind: "migration", id: "m1", seq: 2, timeMs: 2, event: completed("m1"), ...cli },
      { kind: "migration", id: "m2", seq: 3, timeMs: 3, event: req("m2", "v2"), ...unsigned },
      { kind: "invalid", id: "m3", seq: 4, timeMs: 4, problem: "type: invalid", ...unsigned },
      { kind: "invalid", id: "m4", seq: 5, timeMs: 5, problem: "type: invalid", ...coordinator },
      { kind: "replication", vm: "vmx", seq: 6, timeMs: 6, event: snapshot, ...cli },
      { kind: "migration", id: "m5", seq: 7, timeMs: 7, event: req("m5", "v5") }, // not checked
    ];
    for (const r of records) f.add(r);
    const v = f.view({});
    const byId = new Map(v.migrations.map((m) => [m.id, m]));
    expect(byId.get("m1")?.status).toBe("requested");
    expect(byId.get("m2")?.status).toBe("none");
    expect(byId.get("m3")?.status).toBe("none");
    expect(byId.get("m4")?.status).toBe("set-aside");
    expect(byId.get("m5")?.status).toBe("none");
    expect(v.setAside.map((s) => s.migrationId)).toEqual(["m4"]);
    expect(v.replications).toEqual([]);
    expect(v.ignored.count).toBe(5);
    expect(v.ignored.recent.map((i) => [i.id, i.seq, i.reason])).toEqual([
      ["m1", 2, "cli may not record MigrationCompleted"],
      ["m2", 3, "unverified: unsigned"],
      ["m3", 4, "unverified (unsigned) and invalid"],
      ["vmx", 6, "cli may not commit snapshots of host a"],
      ["m5", 7, "unverified: not checked"],
    ]);
    expect(formatReplay(v)).toMatch(/ignored: 5 event\(s\)/);
    expect(formatReplay(v)).toMatch(/replication vmx seq 6 SnapshotCommitted: cli may not commit/);
    // Filtered by VM, only that VM's aggregates' ignored events are counted.
    expect(f.view({}, "v1").ignored.recent.map((i) => i.seq)).toEqual([2]);
    expect(f.view({}, "vmx").ignored.count).toBe(1);
  });
});
