import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { MigrationEvent } from "#schemas/index.js";
import { AgentReply, AgentRequest, ReplicationEvent } from "#schemas/replication.js";
import { compiledSafeParse, compiles } from "./schema-check.js";

const at = "2026-11-26T00:00:00.000Z";
const valid: unknown[] = [
  {
    type: "MigrationRequested",
    version: 1,
    migrationId: "m1",
    at,
    commandId: "c1",
    vm: "vm1",
    source: { host: "a", volumes: [{ path: "d.img", kind: "disk" }] },
    destination: { host: "b", dir: "in" },
    options: { chunkSizeBytes: 1 << 20, batchSizeBytes: 16 << 20, verify: true },
  },
  {
    type: "MigrationPlanned",
    version: 1,
    migrationId: "m1",
    at,
    destDir: "/b/in",
    chunkSizeBytes: 1 << 20,
    chunksPerBatch: 16,
    volumes: [
      {
        index: 0,
        kind: "disk",
        sourcePath: "/a/d.img",
        destName: "d.img",
        sizeBytes: 1 << 24,
        chunkCount: 16,
        firstBatch: 0,
        batchCount: 1,
      },
    ],
    totalBytes: 1 << 24,
    chunkCount: 16,
    batchCount: 1,
  },
  {
    type: "ChunkBatchTransferred",
    version: 1,
    migrationId: "m1",
    at,
    batch: 0,
    attempt: 0,
    host: "a",
    chunks: [{ offset: 0, length: 1 << 20, crc32c: 4294967295, zero: false, wireBytes: 7 }],
    bytes: 1 << 20,
    wireBytes: 7,
    durationMs: 1.5,
  },
  {
    type: "MigrationCompleted",
    version: 1,
    migrationId: "m1",
    at,
    totals: { bytes: 1, zeroBytes: 0, wireBytes: 1, chunks: 1, batches: 1 },
    durationMs: 9,
    volumes: [{ index: 0, destPath: "/b/in/d.img", sizeBytes: 1, crc32c: 1 }],
  },
  { type: "MigrationCancelled", version: 1, migrationId: "m1", at, commandId: "c2" },
];

/** A JSON value that may or may not fit where it is put. */
const jsonish = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(-1, 0, 2 ** 53, 1.5, "", "x".repeat(70), at, "2026-13-01T00:00:00Z", null, true, false),
  fc.constant([]),
  fc.constant({}),
);

/** Replaces, deletes or adds one key somewhere in a JSON value. */
function mutate(v: unknown, path: number[], change: { kind: number; value: unknown; key: string }): unknown {
  if (typeof v !== "object" || v === null) return change.value;
  const copy: Record<string, unknown> | unknown[] = Array.isArray(v)
    ? [...(v as unknown[])]
    : { ...(v as Record<string, unknown>) };
  const keys = Object.keys(copy);
  if (keys.length === 0 || path.length === 0) {
    if (change.kind === 0 && !Array.isArray(copy)) copy[change.key] = change.value;
    return copy;
  }
  const k = keys[path[0]! % keys.length]!;
  const rec = copy as Record<string, unknown>;
  if (path.length === 1 && change.kind === 1 && !Array.isArray(copy)) delete rec[k];
  else rec[k] = mutate(rec[k], path.slice(1), change);
  return copy;
}

describe("compiled schema checks", () => {
  it("compile the event unions and accept stored events without zod", () => {
    for (const s of [MigrationEvent, ReplicationEvent, AgentRequest, AgentReply]) expect(compiles(s)).toBe(true);
    const parse = compiledSafeParse(MigrationEvent);
    for (const e of valid) {
      const r = parse(e);
      expect(r.success && r.data === e, JSON.stringify(e).slice(0, 60)).toBe(true); // the fast path: the value itself
    }
  });

  it("never accept what zod refuses, nor anything zod would return changed (seeded)", () => {
    const parse = compiledSafeParse(MigrationEvent);
    fc.assert(
      fc.property(
        fc.constantFrom(...valid),
        fc.array(fc.nat(), { maxLength: 5 }),
        fc.record({ kind: fc.nat(2), value: jsonish, key: fc.string({ maxLength: 6 }) }),
        (e, path, change) => {
          const v = mutate(e, path, change);
          const fast = parse(v);
          const zod = MigrationEvent.safeParse(v);
          expect(fast.success).toBe(zod.success);
          if (fast.success && zod.success) expect(fast.data).toEqual(zod.data);
        },
      ),
      { seed: 20261127, numRuns: 3000 },
    );
  });

  it("leave defaults, unknown keys and constructs it does not know to zod", () => {
    const S = z.object({ n: z.number().default(3), s: z.string().optional() });
    const parse = compiledSafeParse(S);
    expect(parse({})).toEqual({ success: true, data: { n: 3 } });
    const extra = { n: 1, other: 2 };
    const r = parse(extra);
    expect(r.success && r.data).toEqual({ n: 1 });
    expect(r.success && r.data !== extra).toBe(true);
    const N = compiledSafeParse(z.object({ h: z.string().nullable() }));
    expect([N({ h: null }).success, N({ h: "x" }).success, N({ h: 1 }).success, N({}).success]).toEqual([
      true,
      true,
      false,
      false,
    ]);
    expect(compiles(z.object({ t: z.string().transform((x) => x.length) }))).toBe(false);
    expect(compiledSafeParse(z.object({ t: z.string().transform((x) => x.length) }))({ t: "abc" })).toEqual({
      success: true,
      data: { t: 3 },
    });
  });
});
