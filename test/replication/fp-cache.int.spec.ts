import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadCache, writeCache } from "../../services/replication/src/infra/fp-cache.js";

// The source's fingerprint cache is renamed into place without an fsync: a torn or altered file
// must read as "no cache" (the sync then asks the destination), never as wrong fingerprints.
describe("fingerprint cache", () => {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-fp-cache-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const cache = {
    snapshotId: "s1",
    chunkSizeBytes: 65536,
    volumes: [
      { name: "d.img", sizeBytes: 3 * 4096, chunks: ["a".repeat(64)], fingerprints: BigUint64Array.of(1n, 2n, 3n) },
    ],
  };

  it("round-trips, and refuses a damaged or truncated file", async () => {
    await writeCache(dir, "vm", cache);
    expect(await loadCache(dir, "vm", "s1")).toEqual(cache);
    expect(await loadCache(dir, "vm", "s2")).toBeUndefined();
    const fp = join(dir, "vm", "s1.0.fp");
    const good = readFileSync(fp);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 1]! ^= 1;
    writeFileSync(fp, flipped);
    expect(await loadCache(dir, "vm", "s1")).toBeUndefined();
    writeFileSync(fp, good.subarray(0, good.length - 8));
    expect(await loadCache(dir, "vm", "s1")).toBeUndefined();
    writeFileSync(fp, good);
    writeFileSync(join(dir, "vm", "s1.json"), Buffer.alloc(0));
    expect(await loadCache(dir, "vm", "s1")).toBeUndefined();
  });
});
