import { describe, expect, it } from "vitest";
import { crc32c, crc32cCombine, strongHashSync, volumeHash } from "#native/index.js";
import { fold } from "../domain/migration/evolve.js";
import { planVolumes } from "../domain/migration/planner.js";
import type { MigrationEvent } from "#schemas/index.js";
import { volumeChecksums, volumeHashes } from "./volume-crc.js";

/** A migration of one volume of `data`, its batches logged in `order`; `hash` says which chunks carry a BLAKE3. */
function logged(data: Buffer, chunk: number, order: number[], hash: (c: number) => boolean): MigrationEvent[] {
  const plan = planVolumes([{ kind: "disk", sourcePath: "/a/d.img", sizeBytes: data.length }], chunk, 2 * chunk);
  const base = { migrationId: "m", at: "2026-01-01T00:00:00.000Z", version: 1 as const };
  const events: MigrationEvent[] = [
    {
      type: "MigrationRequested",
      ...base,
      commandId: "c",
      vm: "v",
      source: { host: "a", volumes: [{ path: "/a/d.img", kind: "disk" }] },
      destination: { host: "b", dir: "d" },
      options: { chunkSizeBytes: chunk, batchSizeBytes: 2 * chunk, verify: true },
    },
    { type: "MigrationPlanned", ...base, destDir: "/b/d", ...plan },
  ];
  const count = Math.ceil(data.length / chunk);
  for (const b of order) {
    const chunks = [];
    for (let c = b * 2; c < Math.min(b * 2 + 2, count); c++) {
      const slice = data.subarray(c * chunk, Math.min((c + 1) * chunk, data.length));
      const entry = { offset: c * chunk, length: slice.length, crc32c: crc32c(slice), zero: false, wireBytes: 0 };
      chunks.push(hash(c) ? { ...entry, blake3: strongHashSync(slice).toString("base64url") } : entry);
    }
    events.push({
      type: "ChunkBatchTransferred",
      ...base,
      batch: b,
      attempt: 0,
      host: "a",
      chunks: chunks.reverse(),
      bytes: 0,
      wireBytes: 0,
      durationMs: 1,
    });
  }
  return events;
}

describe("volumeHashes", () => {
  const chunk = 64 * 1024;
  const data = Buffer.alloc(5 * chunk + 100);
  for (let i = 0; i < data.length; i += 5) data[i] = (i * 13) & 0xff;
  const expected = (): string => {
    const hashes = [];
    for (let at = 0; at < data.length; at += chunk) hashes.push(strongHashSync(data.subarray(at, at + chunk)));
    return volumeHash(Buffer.concat(hashes)).toString("base64url");
  };

  it("builds the hash tree of the logged chunk hashes in offset order, whatever order batches landed in", () => {
    expect(
      volumeHashes(
        fold(
          "m",
          logged(data, chunk, [2, 0, 1], () => true),
        ),
        volumeHash,
      ),
    ).toEqual([expected()]);
  });

  it("has no hash for a volume with a chunk logged without one (an older mover)", () => {
    expect(
      volumeHashes(
        fold(
          "m",
          logged(data, chunk, [0, 1, 2], (c) => c !== 3),
        ),
        volumeHash,
      ),
    ).toEqual([undefined]);
  });
});

describe("volumeChecksums", () => {
  it("combines logged chunk checksums into the CRC32C of the whole volume, whatever order batches landed in", () => {
    const chunk = 64 * 1024;
    const data = Buffer.alloc(5 * chunk + 100);
    for (let i = 0; i < data.length; i += 7) data[i] = (i * 31) & 0xff;
    data.fill(0, chunk, 2 * chunk);
    const plan = planVolumes([{ kind: "disk", sourcePath: "/a/d.img", sizeBytes: data.length }], chunk, 2 * chunk);
    const at = "2026-01-01T00:00:00.000Z";
    const base = { migrationId: "m", at, version: 1 as const };
    const events: MigrationEvent[] = [
      {
        type: "MigrationRequested",
        ...base,
        commandId: "c",
        vm: "v",
        source: { host: "a", volumes: [{ path: "/a/d.img", kind: "disk" }] },
        destination: { host: "b", dir: "d" },
        options: { chunkSizeBytes: chunk, batchSizeBytes: 2 * chunk, verify: true },
      },
      { type: "MigrationPlanned", ...base, destDir: "/b/d", ...plan },
    ];
    for (const b of [2, 0, 1]) {
      const chunks = [];
      for (let c = b * 2; c < Math.min(b * 2 + 2, 6); c++) {
        const slice = data.subarray(c * chunk, Math.min((c + 1) * chunk, data.length));
        chunks.push({
          offset: c * chunk,
          length: slice.length,
          crc32c: crc32c(slice),
          zero: slice.every((x) => x === 0),
          wireBytes: 0,
        });
      }
      events.push({
        type: "ChunkBatchTransferred",
        ...base,
        batch: b,
        attempt: 0,
        host: "a",
        chunks: chunks.reverse(),
        bytes: 0,
        wireBytes: 0,
        durationMs: 1,
      });
    }
    expect(volumeChecksums(fold("m", events), crc32cCombine)).toEqual([crc32c(data)]);
  });
});
