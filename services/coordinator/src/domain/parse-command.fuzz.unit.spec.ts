import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Id, MigrationRejected, RejectionReason } from "#schemas/index.js";
import { MAX_REJECTION_MESSAGE_CHARS, parseCommand } from "./parse-command.js";

// Fuzzing the command parser: 100,000 messages (random bytes, random JSON, and valid commands
// with one field replaced by a random value). It must never throw, and a rejection must be one a
// MigrationRejected event can carry: a known reason, ids that are ids, and a message of bounded
// length whatever the sender sent.

const enc = new TextEncoder();
const start = {
  type: "StartMigration",
  version: 1,
  commandId: "c-1",
  vm: "vm",
  source: { host: "a", volumes: [{ path: "disk.img", kind: "disk" }] },
  destination: { host: "b", dir: "in" },
  options: { chunkSizeBytes: 4194304, batchSizeBytes: 67108864, verify: true },
};
const cancel = { type: "CancelMigration", version: 1, commandId: "c-2", migrationId: "m-1", reason: "why" };

const value = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.string({ maxLength: 300 }),
  fc.constantFrom(-1, 0, 2 ** 53, 4294967296, 1.5, "", null, [], {}, "StartMigration", "x".repeat(5000)),
);
const mutated = fc
  .record({
    base: fc.constantFrom<Record<string, unknown>>(start, cancel),
    key: fc.constantFrom(
      "type",
      "version",
      "commandId",
      "migrationId",
      "vm",
      "source",
      "destination",
      "options",
      "reason",
    ),
    value,
    drop: fc.boolean(),
  })
  .map(({ base, key, value: v, drop }) => {
    const copy: Record<string, unknown> = { ...base };
    if (drop) delete copy[key];
    else copy[key] = v;
    return enc.encode(JSON.stringify(copy));
  });
const message = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => enc.encode(JSON.stringify(v) ?? "")),
  mutated,
);

function checkRejection(data: Uint8Array): void {
  const r = parseCommand(data);
  if (r.ok) return;
  expect(RejectionReason.safeParse(r.reason).success).toBe(true);
  expect(r.message.length).toBeLessThanOrEqual(MAX_REJECTION_MESSAGE_CHARS + 64);
  if (r.aggregateId !== undefined) expect(Id.safeParse(r.aggregateId).success).toBe(true);
  if (r.commandId !== undefined) expect(Id.safeParse(r.commandId).success).toBe(true);
}

describe("parseCommand under fuzzing", () => {
  it("never throws and rejects with a bounded, event-ready reason (100,000 cases)", () => {
    fc.assert(fc.property(message, checkRejection), { numRuns: 100_000, seed: 20261205 });
  }, 120_000);

  it("echoes at most a short prefix of a 250 KiB junk type", () => {
    const r = parseCommand(enc.encode(JSON.stringify({ ...start, type: "A".repeat(250 * 1024) })));
    expect(r).toMatchObject({ ok: false, reason: "UNKNOWN_COMMAND", commandId: "c-1" });
    if (r.ok) return;
    expect(r.message.length).toBeLessThan(400);
    const event = { type: "MigrationRejected", version: 1, migrationId: "c-1", at: "2026-01-01T00:00:00Z", ...r };
    expect(MigrationRejected.safeParse(event).success).toBe(true);
  });
});
