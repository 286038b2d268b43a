import { describe, expect, it } from "vitest";
import type { MigrationEvent } from "#schemas/index.js";
import { decide, DEFAULT_RETRY_POLICY } from "./decide.js";
import { fold } from "./evolve.js";
import { foldTrusted, IGNORED_KEPT, refusal, type ProducedEvent, type Producer } from "./producers.js";
import type { Migration } from "./state.js";

const now = new Date("2026-01-01T00:00:10.000Z");
const ctx = { now, policy: DEFAULT_RETRY_POLICY };
const MiB = 1024 * 1024;

const by = (role: string, host?: string): Producer => ({
  kind: "signed",
  principal: { role, ...(host ? { host } : {}) },
});
const coordinator = by("coordinator");
const moverA = by("mover-a", "a");
const moverC = by("mover-c", "c");

/** A migration of one 12 MiB volume from host a to b, planned into batches of 4 MiB. */
function plannedHistory(): MigrationEvent[] {
  const requested = decide(
    fold("m1", []),
    {
      type: "StartMigration",
      version: 1,
      commandId: "c1",
      migrationId: "m1",
      vm: "vm1",
      source: { host: "a", volumes: [{ path: "/src/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "vms/vm1" },
      options: { chunkSizeBytes: 4 * MiB, batchSizeBytes: 4 * MiB, verify: true },
    },
    ctx,
  );
  const outcome = {
    ok: true as const,
    destDir: "/dst/vms/vm1",
    volumes: [{ kind: "disk" as const, sourcePath: "/src/disk.img", sizeBytes: 12 * MiB }],
  };
  return [...requested, ...decide(fold("m1", requested), { type: "PlanMigration", outcome }, ctx)];
}

const transferred = (batch: number, host = "a", attempt = 0): MigrationEvent => ({
  type: "ChunkBatchTransferred",
  migrationId: "m1",
  at: now.toISOString(),
  version: 1,
  batch,
  attempt,
  host,
  chunks: [{ offset: batch * 4 * MiB, length: 4 * MiB, crc32c: 1, zero: false, wireBytes: 4 * MiB }],
  bytes: 4 * MiB,
  wireBytes: 4 * MiB,
  durationMs: 1,
});

const completed: MigrationEvent = {
  type: "MigrationCompleted",
  migrationId: "m1",
  at: now.toISOString(),
  version: 1,
  totals: { bytes: 100e9, zeroBytes: 0, wireBytes: 100e9, chunks: 1, batches: 1 },
  durationMs: 1,
  volumes: [],
};

/** given(events signed by the coordinator).when(event, producer).then: folded or ignored. */
function given(history: MigrationEvent[]) {
  const base: ProducedEvent[] = history.map((event, i) => ({ event, seq: i + 1, provenance: coordinator }));
  const before = foldTrusted("m1", base);
  return {
    when: (event: MigrationEvent, provenance: Producer | undefined) => {
      const after = foldTrusted("m1", [{ event, seq: base.length + 1, provenance }], before);
      return {
        thenIgnored: (reason: RegExp): Migration => {
          expect(after.ignored?.count).toBe((before.ignored?.count ?? 0) + 1);
          expect(after.ignored?.recent.at(-1)).toMatchObject({ seq: base.length + 1, type: event.type });
          expect(after.ignored?.recent.at(-1)?.reason).toMatch(reason);
          expect({ ...after, ignored: undefined }).toEqual({ ...before, ignored: undefined });
          return after;
        },
        thenFolded: (): Migration => {
          expect(after.ignored).toEqual(before.ignored);
          expect(after.eventCount).toBe(before.eventCount + 1);
          return after;
        },
      };
    },
  };
}

describe("who may make which migration event", () => {
  it("given a planned migration, when mover-a reports batch 0 of host a, then it is folded", () => {
    const m = given(plannedHistory()).when(transferred(0), moverA).thenFolded();
    expect(m.batches[0]?.status).toBe("done");
  });

  it("given a planned migration, when mover-c reports a batch assigned to a, then it is ignored", () => {
    given(plannedHistory())
      .when(transferred(0, "c"), moverC)
      .thenIgnored(/mover-c may not report .* host a/);
    given(plannedHistory())
      .when(transferred(0, "a"), moverC)
      .thenIgnored(/mover-c may not report/);
  });

  it("given a planned migration, when mover-a claims another host's batch in the event, then it is ignored", () => {
    given(plannedHistory())
      .when(transferred(0, "c"), moverA)
      .thenIgnored(/may not report/);
  });

  it("given a planned migration, when a transfer names an attempt never handed out, then it is ignored", () => {
    given(plannedHistory())
      .when(transferred(0, "a", 3), moverA)
      .thenIgnored(/attempt 3 .* never handed out/);
  });

  it("given a planned migration, when the cli or a mover records a decision, then it is ignored", () => {
    given(plannedHistory())
      .when(completed, by("cli"))
      .thenIgnored(/cli may not record MigrationCompleted/);
    given(plannedHistory())
      .when(completed, moverA)
      .thenIgnored(/mover-a may not record/);
  });

  it("given nothing, when an unsigned or unverifiable history arrives, then none of it is folded", () => {
    const forged = [...plannedHistory(), completed];
    const m = foldTrusted(
      "m1",
      forged.map((event, i) => ({ event, seq: i + 1, provenance: { kind: "unverified", reason: "unsigned" } })),
    );
    expect(m.status).toBe("none");
    expect(m.ignored?.count).toBe(forged.length);
    expect(m.ignored?.recent.at(-1)?.reason).toBe("unverified: unsigned");
    expect(refusal(m, completed, undefined)).toBe("unverified: not checked");
  });

  it("given a planned migration, when the coordinator records a max-deliveries failure, then it is folded", () => {
    given(plannedHistory())
      .when(
        {
          type: "ChunkBatchFailed",
          migrationId: "m1",
          at: now.toISOString(),
          version: 1,
          batch: 0,
          attempt: 0,
          host: "a",
          code: "MAX_DELIVERIES",
          retryable: true,
          message: "x",
        },
        coordinator,
      )
      .thenFolded();
  });

  it("given an insecure reader, when anyone's event arrives, then it is folded as before", () => {
    given(plannedHistory()).when(completed, { kind: "insecure" }).thenFolded();
  });

  it("keeps the count of ignored events exact and the details of the latest few", () => {
    const many: ProducedEvent[] = Array.from({ length: IGNORED_KEPT + 5 }, (_, i) => ({
      event: completed,
      seq: i + 1,
      provenance: by("cli"),
    }));
    const m = foldTrusted("m1", many);
    expect(m.ignored?.count).toBe(IGNORED_KEPT + 5);
    expect(m.ignored?.recent).toHaveLength(IGNORED_KEPT);
    expect(m.ignored?.recent.at(-1)?.seq).toBe(IGNORED_KEPT + 5);
  });
});
