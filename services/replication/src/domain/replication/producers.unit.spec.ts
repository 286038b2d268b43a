import { describe, expect, it } from "vitest";
import type { SnapshotCommitted } from "#schemas/replication.js";
import { replicationRefusal } from "./producers.js";

const committed: SnapshotCommitted = {
  type: "SnapshotCommitted",
  vm: "vm1",
  at: "2026-01-01T00:00:00.000Z",
  version: 1,
  snapshotId: "s1",
  takenAt: "2026-01-01T00:00:00.000Z",
  source: { host: "a", paths: ["disk.img"] },
  destination: { host: "b", store: "/evil/store" },
  manifest: "manifests/s1.json",
  manifestBlake3: "0".repeat(64),
  volumes: [],
  bytes: 0,
  changedBytes: 0,
  wireBytes: 0,
  durationMs: 0,
};
const signed = (role: string) => ({ kind: "signed" as const, principal: { role } });

describe("who may commit and prune snapshots", () => {
  it("given a snapshot of host a, when replication-a commits it, then it is taken", () => {
    expect(replicationRefusal(committed, signed("replication-a"))).toBeUndefined();
  });

  it("given a snapshot of host a, when anyone else commits it, then it is refused", () => {
    expect(replicationRefusal(committed, signed("replication-b"))).toMatch(/replication-b may not commit .* host a/);
    expect(replicationRefusal(committed, signed("cli"))).toMatch(/cli may not commit/);
    expect(replicationRefusal(committed, { kind: "unverified", reason: "unsigned" })).toBe("unverified: unsigned");
  });

  it("takes pruning only from a replication service", () => {
    const pruned = { type: "SnapshotsPruned" as const, vm: "vm1", at: committed.at, version: 1 as const };
    expect(replicationRefusal({ ...pruned, snapshotIds: ["s1"], chunksDeleted: 0 }, signed("mover-a"))).toMatch(
      /may not prune/,
    );
    expect(replicationRefusal({ ...pruned, snapshotIds: ["s1"], chunksDeleted: 0 }, signed("replication-a"))).toBe(
      undefined,
    );
  });
});
