import { randomFillSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { blake3Hex } from "./chunk-store.js";
import { HashPool } from "./hash-pool.js";

// The worker thread a large restore verifies on: the same names as hashing on this thread, for
// views of one SharedArrayBuffer, and this thread's answer for anything else.
describe("hash pool", () => {
  it("names chunks of a shared span on its worker as this thread would", async () => {
    const span = randomFillSync(Buffer.from(new SharedArrayBuffer(1 << 20)));
    const chunks = [
      span.subarray(0, 65536),
      span.subarray(65536, 65536 + 4096),
      span.subarray(200_000, 200_001),
      span.subarray(300_000, 300_000),
    ];
    const expected = await Promise.all(chunks.map((c) => blake3Hex(c)));
    const pool = new HashPool();
    expect(await pool.started).toBe(true);
    try {
      expect(await pool.hashAll(chunks)).toEqual(expected);
      expect(await pool.hashAll([Buffer.from(chunks[0]!)])).toEqual([expected[0]]); // not shared: here
      span[0] = span[0]! ^ 1;
      expect((await pool.hashAll(chunks))[0]).not.toBe(expected[0]);
    } finally {
      await pool.close();
    }
    const alone = new HashPool({ worker: false });
    expect(await alone.started).toBe(false);
    expect(await alone.hashAll(chunks.slice(1))).toEqual(expected.slice(1));
  });
});
