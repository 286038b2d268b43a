import { describe, expect, it } from "vitest";
import type { ReplicationEvent, SnapshotCommitted } from "#schemas/replication.js";
import { fold } from "./evolve.js";
import { latestSnapshot, snapshotAt } from "./state.js";

const committed = (id: string, takenAt: string): SnapshotCommitted => ({
  type: "SnapshotCommitted",
  version: 1,
  vm: "web",
  at: takenAt,
  snapshotId: id,
  takenAt,
  source: { host: "a", paths: ["/a/d.img"] },
  destination: { host: "b", store: "/b/.dwcp-store" },
  manifest: `manifests/web/${id}.json`,
  manifestBlake3: "a".repeat(64),
  volumes: [{ name: "d.img", sizeBytes: 10, chunkCount: 1 }],
  bytes: 10,
  changedBytes: 10,
  wireBytes: 20,
  durationMs: 1,
});

/** given(events).then(snapshot ids) */
const given = (...events: ReplicationEvent[]) => ({
  then: (ids: string[]) => expect(fold("web", events).snapshots.map((s) => s.snapshotId)).toEqual(ids),
});

describe("replication evolve", () => {
  it("adds committed snapshots in order and ignores a duplicate commit", () => {
    given(
      committed("s1", "2026-01-01T00:00:00Z"),
      committed("s2", "2026-01-01T01:00:00Z"),
      committed("s1", "2026-01-01T00:00:00Z"),
    ).then(["s1", "s2"]);
  });

  it("drops pruned snapshots, ignores unknown ids, and never resurrects a pruned one", () => {
    const pruned: ReplicationEvent = {
      type: "SnapshotsPruned",
      version: 1,
      vm: "web",
      at: "2026-01-01T02:00:00Z",
      snapshotIds: ["s1", "zz"],
      chunksDeleted: 3,
    };
    given(
      committed("s1", "2026-01-01T00:00:00Z"),
      committed("s2", "2026-01-01T01:00:00Z"),
      pruned,
      committed("s1", "2026-01-01T00:00:00Z"),
    ).then(["s2"]);
    expect(fold("web", [committed("s1", "2026-01-01T00:00:00Z"), pruned]).pruned).toEqual(["s1"]);
  });

  it("finds the snapshot as of a time", () => {
    const r = fold("web", [committed("s1", "2026-01-01T00:00:00Z"), committed("s2", "2026-01-01T01:00:00Z")]);
    expect(snapshotAt(r, "2025-12-31T23:59:59Z")).toBeUndefined();
    expect(snapshotAt(r, "2026-01-01T00:30:00Z")?.snapshotId).toBe("s1");
    expect(snapshotAt(r, "2026-01-01T01:00:00Z")?.snapshotId).toBe("s2");
    expect(latestSnapshot(r)?.snapshotId).toBe("s2");
  });
});
