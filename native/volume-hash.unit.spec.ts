// The volume hash (BLAKE3 over the chunk hashes in offset order) must come out the same on every
// kernel path: the source's log and the destination may run different ones (a host without the
// native module, a CPU without AVX-512).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  InvalidArgumentError,
  paths,
  STRONG_HASH_BYTES,
  strongHashSync,
  volumeHash,
  type KernelPath,
} from "./index.js";

const SEED = 0x0b1a_4e53;
const all: KernelPath[] = [paths.ts, paths.scalar, paths.simd, paths.simdNoAvx512].filter((p) => p !== undefined);
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** Deterministic pseudo-random bytes (xorshift32). */
function bytes(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed | 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** The hash tree spelled out with the TypeScript path only: BLAKE3 of the concatenated chunk hashes. */
function reference(chunks: readonly Uint8Array[]): string {
  return hex(paths.ts.strongHash(Buffer.concat(chunks.map((c) => paths.ts.strongHash(c)))));
}

describe("volumeHash, every path against the TypeScript fallback", () => {
  it.each(all.map((p) => [p.name, p]))("%s: known inputs", (_name, p) => {
    // No chunks (an empty volume): the hash of the empty input.
    expect(hex(volumeHash(new Uint8Array(0), p))).toBe(
      "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    );
    const zeros = new Uint8Array(64 * 1024);
    const hashes = Buffer.concat([p.strongHash(zeros), p.strongHash(zeros)]);
    expect(hex(volumeHash(hashes, p))).toBe(reference([zeros, zeros]));
  });

  it.each(all.map((p) => [p.name, p]))(
    "%s: random volumes cut into chunks",
    (_name, p) => {
      fc.assert(
        fc.property(
          fc.record({
            chunks: fc.integer({ min: 0, max: 40 }),
            chunkBytes: fc.constantFrom(1, 4096, 65_536, 1024 * 1024 + 13),
            seed: fc.integer(),
          }),
          ({ chunks, chunkBytes, seed }) => {
            const parts = Array.from({ length: chunks }, (_, i) =>
              bytes(i === chunks - 1 ? chunkBytes - 1 : chunkBytes, seed + i),
            );
            const hashes = Buffer.concat(parts.map((c) => p.strongHash(c)));
            expect(hashes.length).toBe(chunks * STRONG_HASH_BYTES);
            expect(hex(volumeHash(hashes, p))).toBe(reference(parts));
            // Order matters: swapping two chunks changes the volume hash.
            if (chunks >= 2 && hex(parts[0] as Uint8Array) !== hex(parts[1] as Uint8Array)) {
              const swapped = Buffer.concat([hashes.subarray(32, 64), hashes.subarray(0, 32), hashes.subarray(64)]);
              expect(hex(volumeHash(swapped, p))).not.toBe(hex(volumeHash(hashes, p)));
            }
          },
        ),
        { seed: SEED, numRuns: 12 },
      );
    },
    120_000,
  );

  it("the default path is the live one and equals the fallback", () => {
    const hashes = Buffer.concat([1, 2, 3].map((s) => strongHashSync(bytes(5000, s))));
    expect(hex(volumeHash(hashes))).toBe(hex(volumeHash(hashes, paths.ts)));
  });

  it("refuses input that is not whole 32-byte hashes", () => {
    expect(() => volumeHash(new Uint8Array(33))).toThrow(InvalidArgumentError);
    expect(() => volumeHash("x" as unknown as Uint8Array)).toThrow(InvalidArgumentError);
  });
});
