import { describe, expect, it } from "vitest";
import { parseCommand } from "./parse-command.js";

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
const good = {
  type: "StartMigration",
  version: 1,
  commandId: "c-1",
  vm: "vm",
  source: { host: "a", volumes: [{ path: "disk.img", kind: "disk" }] },
  destination: { host: "b", dir: "in" },
};

describe("parseCommand", () => {
  it("accepts a minimal StartMigration and fills defaults", () => {
    const r = parseCommand(enc(good));
    expect(r).toMatchObject({
      ok: true,
      aggregateId: "c-1",
      command: { options: { chunkSizeBytes: 4194304, verify: true, batchSizeBytes: 67108864 } },
    });
  });
  it.each([
    ["{not json", "INVALID_JSON", undefined],
    [{ ...good, type: "Nope" }, "UNKNOWN_COMMAND", "c-1"],
    [{ ...good, version: 2 }, "UNSUPPORTED_VERSION", "c-1"],
    [{ ...good, options: { chunkSizeBytes: 3 * 65536 } }, "CHUNK_SIZE_INVALID", "c-1"],
    [{ ...good, options: { chunkSizeBytes: 32768 } }, "CHUNK_SIZE_INVALID", "c-1"],
    [{ ...good, source: { host: "a", volumes: [] } }, "EMPTY_VOLUMES", "c-1"],
    [{ ...good, destination: { host: "b c", dir: "x" } }, "SCHEMA_INVALID", "c-1"],
    [{ ...good, migrationId: "m-9", vm: "" }, "SCHEMA_INVALID", "m-9"],
  ])("rejects %j with %s", (input, reason, aggregateId) => {
    const r = parseCommand(enc(input));
    expect(r).toMatchObject({ ok: false, reason });
    if (!r.ok) {
      expect(r.aggregateId).toBe(aggregateId);
      expect(r.message.length).toBeGreaterThan(5);
    }
  });
});
