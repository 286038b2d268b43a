import { describe, expect, it } from "vitest";
import { SnapshotCommitted, type ReplicationEvent } from "#schemas/replication.js";
import { SnapshotVmDefinition } from "#schemas/vm.js";
import { decide, snapshotCommitted, type ReplicationCommand, type SnapshotRecord } from "./decide.js";
import { SnapshotParentMovedError } from "./errors.js";
import { fold } from "./evolve.js";

const now = new Date("2026-01-01T03:00:00.000Z");
const ctx = { now };

const snapshot = (id: string, parentId?: string): SnapshotRecord => ({
  snapshotId: id,
  ...(parentId ? { parentId } : {}),
  takenAt: "2026-01-01T00:00:00.000Z",
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
const committed = (id: string, parentId?: string): ReplicationEvent =>
  snapshotCommitted("web", new Date("2026-01-01T00:00:01Z"), snapshot(id, parentId));
const commit = (id: string, parentId?: string): ReplicationCommand => ({
  type: "CommitSnapshot",
  snapshot: snapshot(id, parentId),
});
const prune = (...snapshotIds: string[]): ReplicationCommand => ({
  type: "PruneSnapshots",
  snapshotIds,
  chunksDeleted: 7,
});

/** given(events).when(command).then(events) */
function given(...history: ReplicationEvent[]) {
  const state = fold("web", history);
  return {
    when: (command: ReplicationCommand) => ({
      then: (expected: Array<Partial<ReplicationEvent>>) =>
        expect(decide(state, command, ctx)).toEqual(expected.map((e): unknown => expect.objectContaining(e))),
      throws: (cls: new (...a: never[]) => Error) => expect(() => decide(state, command, ctx)).toThrow(cls),
    }),
  };
}

describe("replication decide", () => {
  it("commits the first snapshot of a VM, stamped with the context's time", () => {
    given()
      .when(commit("s1"))
      .then([{ type: "SnapshotCommitted", vm: "web", snapshotId: "s1", at: now.toISOString() }]);
  });

  it("commits a snapshot on top of the latest one", () => {
    given(committed("s1"))
      .when(commit("s2", "s1"))
      .then([{ type: "SnapshotCommitted", snapshotId: "s2", parentId: "s1" }]);
  });

  it("records a snapshot once: committing it again decides nothing", () => {
    given(committed("s1")).when(commit("s1")).then([]);
  });

  it("never brings back a pruned snapshot", () => {
    given(committed("s1"), committed("s2", "s1"), prunedEvent(["s1"]))
      .when(commit("s1"))
      .then([]);
  });

  it("refuses a snapshot computed against a parent that is no longer the latest", () => {
    given(committed("s1"), committed("s2", "s1")).when(commit("s3", "s1")).throws(SnapshotParentMovedError);
    given(committed("s1")).when(commit("s2")).throws(SnapshotParentMovedError);
  });

  it("prunes the named snapshots that are present", () => {
    given(committed("s1"), committed("s2", "s1"))
      .when(prune("s1", "gone"))
      .then([{ type: "SnapshotsPruned", snapshotIds: ["s1"], chunksDeleted: 7, at: now.toISOString() }]);
  });

  it("a prune whose snapshots are all gone already decides nothing", () => {
    given(committed("s1"), committed("s2", "s1"), prunedEvent(["s1"]))
      .when(prune("s1"))
      .then([]);
    given().when(prune("s1")).then([]);
  });
});

function prunedEvent(snapshotIds: string[]): ReplicationEvent {
  return { type: "SnapshotsPruned", version: 1, vm: "web", at: "2026-01-01T02:00:00Z", snapshotIds, chunksDeleted: 1 };
}

describe("a running VM's snapshot", () => {
  const vmDefinition = SnapshotVmDefinition.parse({
    version: 1,
    name: "web",
    memoryMiB: 128,
    disks: [{ id: "disk0", path: "vms/web/d.img" }],
  });

  it("is recorded as version 2 with the VM's definition, which the fold keeps and the schema checks", () => {
    const event = snapshotCommitted("web", now, { ...snapshot("s1"), vmDefinition });
    expect(event).toMatchObject({ version: 2, vmDefinition });
    expect(SnapshotCommitted.parse(event)).toEqual(event);
    expect(fold("web", [event]).snapshots[0]?.vmDefinition).toEqual(vmDefinition);
    expect(snapshotCommitted("web", now, snapshot("s2")).version).toBe(1);
    expect(SnapshotCommitted.safeParse({ ...event, version: 1 }).success).toBe(false);
  });

  it("drops a host root from the definition and refuses a path leaving it", () => {
    const event = snapshotCommitted("web", now, { ...snapshot("s1"), vmDefinition });
    const parsed = SnapshotCommitted.parse({ ...event, vmDefinition: { ...vmDefinition, root: "/srv" } });
    expect(parsed.vmDefinition).not.toHaveProperty("root");
    const outside = { ...vmDefinition, disks: [{ id: "disk0", path: "../../etc/shadow", format: "raw" }] };
    expect(SnapshotCommitted.safeParse({ ...event, vmDefinition: outside }).success).toBe(false);
  });
});
