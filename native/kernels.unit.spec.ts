// Every kernel on every path (TypeScript, scalar C++, SIMD C++ with and without AVX-512) must
// give identical results. Native comparisons are skipped, with a message, when the module is
// not built; the TypeScript path is always tested against known vectors.
import fc from "fast-check";
import { describe, expect, it } from "vitest";

import { compressChunk, decompressChunk, sampleOf, SAMPLE_PIECES } from "./compress.js";
import { CompressedChunkCorruptError } from "./errors.js";
import {
  analyzeChunk,
  capabilities,
  crc32c,
  crc32cAsync,
  crc32cCombine,
  crc32cZeros,
  fingerprints,
  fingerprintsAsync,
  InvalidArgumentError,
  isZero,
  loadNative,
  NativeConfigError,
  nativeMode,
  NativeModuleMissingError,
  nativeUnavailableReason,
  pageTreePages,
  paths,
  strongHash,
  xorDeltaDecode,
  xorDeltaEncode,
  XorDeltaCorruptError,
  zeroPages,
  type KernelPath,
} from "./index.js";

const SEED = 0x0dc0_4b1d; // fast-check seed: failures print it with the counterexample
const MiB = 1 << 20;
const all: KernelPath[] = [paths.ts, paths.scalar, paths.simd, paths.simdNoAvx512].filter((p) => p !== undefined);
const native = all.length > 1;
if (!native) console.warn(`native module absent (${nativeUnavailableReason}): native-vs-TS comparisons are skipped`);

/** Deterministic pseudo-random bytes (xorshift32), much faster than generating them with fc. */
function bytes(len: number, seed: number, offset = 0): Uint8Array {
  const backing = new Uint8Array(len + offset);
  let x = seed | 1;
  for (let i = 0; i < backing.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    backing[i] = x & 0xff;
  }
  return backing.subarray(offset); // unaligned view for odd offsets
}

/** Sizes biased to the edges that matter: tiny, around pages and SIMD blocks, and up to 1 MiB + 13. */
const size = fc.oneof(
  fc.integer({ min: 0, max: 300 }),
  fc.integer({ min: 0, max: 70_000 }),
  fc.integer({ min: 0, max: MiB + 13 }),
);
const buffer = fc
  .record({ len: size, seed: fc.integer(), offset: fc.integer({ min: 0, max: 15 }) })
  .map(({ len, seed, offset }) => bytes(len, seed, offset));
const opts = { seed: SEED, numRuns: 40 };
const slow = 120_000;

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

describe("known vectors, every path", () => {
  const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
  it.each(all.map((p) => [p.name, p]))("%s", (_name, p) => {
    expect(p.crc32c(ascii("123456789"))).toBe(0xe3069283);
    expect(p.crc32c(new Uint8Array(0))).toBe(0);
    expect(p.crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(p.crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(p.crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(p.crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
    expect(hex(p.strongHash(new Uint8Array(0)))).toBe(
      "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    );
    expect(hex(p.strongHash(ascii("abc")))).toBe("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
  });

  it("crc32cZeros and crc32cCombine match known values", () => {
    expect(crc32cZeros(32)).toBe(0x8a9136aa);
    expect(crc32cZeros(0, 0x12345678)).toBe(0x12345678);
    expect(crc32cCombine(crc32c(ascii("1234")), crc32c(ascii("56789")), 5)).toBe(0xe3069283);
  });
});

describe.skipIf(!native)("native and TypeScript paths agree on random unaligned buffers", () => {
  const agree = <T>(f: (p: KernelPath) => T): void => {
    const [first, ...rest] = all.map(f);
    for (const r of rest) expect(r).toEqual(first);
  };

  it(
    "crc32c, with and without a seed",
    () => {
      fc.assert(
        fc.property(buffer, fc.integer({ min: 0, max: 0xffffffff }), (b, seed) => {
          agree((p) => p.crc32c(b));
          agree((p) => p.crc32c(b, seed));
        }),
        opts,
      );
    },
    slow,
  );

  it(
    "zero pages, isZero and analyzeChunk with a non-zero byte at a random position",
    () => {
      const sparse = fc.record({
        len: size,
        at: fc.nat(),
        value: fc.integer({ min: 1, max: 255 }),
        offset: fc.integer({ min: 0, max: 15 }),
      });
      fc.assert(
        fc.property(sparse, ({ len, at, value, offset }) => {
          const b = new Uint8Array(len + offset).subarray(offset);
          agree((p) => [p.isZero(b), [...p.zeroPages(b)]]);
          if (len === 0) return;
          b[at % len] = value;
          const expected = Array.from({ length: Math.ceil(len / 4096) }, (_, i) =>
            i === Math.floor((at % len) / 4096) ? 0 : 1,
          );
          for (const p of all) {
            expect(p.isZero(b)).toBe(false);
            expect([...p.zeroPages(b)]).toEqual(expected);
            expect(p.analyzeChunk(b)).toEqual({
              crc32c: p.crc32c(b),
              allZero: false,
              zeroPages: Uint8Array.from(expected),
            });
          }
        }),
        opts,
      );
    },
    slow,
  );

  it(
    "analyzeChunk",
    () => {
      fc.assert(
        fc.property(buffer, (b) => agree((p) => p.analyzeChunk(b))),
        opts,
      );
    },
    slow,
  );

  it(
    "fingerprints, bit for bit",
    () => {
      fc.assert(
        fc.property(buffer, (b) => agree((p) => [...p.fingerprints(b)])),
        opts,
      );
    },
    slow,
  );

  it(
    "strong hash",
    () => {
      fc.assert(
        fc.property(buffer, (b) => agree((p) => hex(p.strongHash(b)))),
        { ...opts, numRuns: 25 },
      );
    },
    slow,
  );

  it(
    "xor delta encodings are identical and decode on every path",
    () => {
      const edits = fc.array(
        fc.record({ at: fc.nat(), len: fc.integer({ min: 1, max: 100 }), v: fc.integer({ min: 1, max: 255 }) }),
        { maxLength: 30 },
      );
      fc.assert(
        fc.property(buffer, edits, (oldBuf, list) => {
          const newBuf = Uint8Array.from(oldBuf);
          for (const e of list) {
            if (newBuf.length === 0) break;
            const s = e.at % newBuf.length;
            for (let i = s; i < Math.min(newBuf.length, s + e.len); i++) newBuf[i]! ^= e.v;
          }
          agree((p) => hex(p.xorDeltaEncode(oldBuf, newBuf)));
          const delta = paths.ts.xorDeltaEncode(oldBuf, newBuf);
          for (const p of all) {
            expect(hex(p.xorDeltaDecode(oldBuf, delta))).toBe(hex(newBuf));
            const inPlace = Uint8Array.from(oldBuf);
            expect(p.xorDeltaDecode(inPlace, delta, inPlace)).toBe(inPlace);
            expect(hex(inPlace)).toBe(hex(newBuf));
          }
        }),
        opts,
      );
    },
    slow,
  );

  it("readProbe sees every byte", () => {
    const b = new Uint8Array(MiB + 13);
    for (const p of all) expect(p.readProbe(b)).toBe(false);
    b[MiB + 12] = 1;
    for (const p of all) expect(p.readProbe(b)).toBe(true);
  });
});

describe("CRC32C algebra (live path)", () => {
  it(
    "combine(crc(a), crc(b), |b|) = crc(a||b), and a seed continues a crc",
    () => {
      fc.assert(
        fc.property(buffer, buffer, (a, b) => {
          const ab = new Uint8Array(a.length + b.length);
          ab.set(a);
          ab.set(b, a.length);
          expect(crc32cCombine(crc32c(a), crc32c(b), b.length)).toBe(crc32c(ab));
          expect(crc32c(b, crc32c(a))).toBe(crc32c(ab));
        }),
        { ...opts, numRuns: 20 },
      );
    },
    slow,
  );

  it(
    "crc32cZeros(len, seed) = crc of len zero bytes continuing seed",
    () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 3 * MiB }), fc.integer({ min: 0, max: 0xffffffff }), (len, seed) => {
          expect(crc32cZeros(len, seed)).toBe(crc32c(new Uint8Array(len), seed));
        }),
        { ...opts, numRuns: 20 },
      );
      expect(crc32cZeros(2 ** 40)).toBe(crc32cCombine(crc32cZeros(2 ** 39), crc32cZeros(2 ** 39), 2 ** 39));
    },
    slow,
  );
});

describe("BLAKE3 of inputs of whole 64 KiB groups, every path", () => {
  const GROUP = 64 * 1024;
  // Each group: zeros (hashed from the zero-group table), data, or zeros but for one byte
  // anywhere in it (the last byte included: a group is zero only if every byte is).
  const group = fc.oneof(
    fc.constant<{ kind: "zero" }>({ kind: "zero" }),
    fc.record({ kind: fc.constant("data" as const), seed: fc.integer() }),
    fc.record({ kind: fc.constant("one" as const), at: fc.integer({ min: 0, max: GROUP - 1 }) }),
  );
  const build = (groups: Array<{ kind: "zero" } | { kind: "data"; seed: number } | { kind: "one"; at: number }>) => {
    const buf = Buffer.alloc(groups.length * GROUP);
    for (const [i, g] of groups.entries()) {
      if (g.kind === "data") buf.set(bytes(GROUP, g.seed), i * GROUP);
      if (g.kind === "one") buf[i * GROUP + g.at] = 1;
    }
    return buf;
  };
  it(
    "are BLAKE3's, bit for bit, whichever groups are zeros",
    () => {
      fc.assert(
        fc.property(fc.array(group, { minLength: 1, maxLength: 80 }), (groups) => {
          const buf = build(groups);
          const want = hex(paths.ts.strongHash(buf));
          for (const p of all) expect(hex(p.strongHash(buf)), p.name).toBe(want);
        }),
        { ...opts, numRuns: 30 },
      );
    },
    slow,
  );

  it(
    "at the largest chunk and past it, where the table ends",
    () => {
      for (const groups of [1024, 1025]) {
        const buf = Buffer.alloc(groups * GROUP);
        buf.set(bytes(GROUP, groups), (groups - 2) * GROUP);
        const want = hex(paths.ts.strongHash(buf));
        for (const p of all) expect(hex(p.strongHash(buf)), p.name).toBe(want);
      }
    },
    slow,
  );
});

describe("BLAKE3 page chaining values, every path", () => {
  const pageTree = fc.record({
    log: fc.integer({ min: 1, max: 8 }),
    seed: fc.integer(),
    offset: fc.integer({ min: 0, max: 7 }),
    edits: fc.array(fc.nat(), { maxLength: 4 }),
  });
  it(
    "give the hash of the whole input, and of the input with some pages rewritten",
    () => {
      fc.assert(
        fc.property(pageTree, ({ log, seed, offset, edits }) => {
          const pages = 2 ** log;
          const buf = Buffer.from(bytes(pages * 4096, seed, offset));
          const want = hex(paths.ts.strongHash(buf));
          for (const p of all) {
            const cvs = new Uint8Array(32 * pages);
            expect(hex(p.strongHashPages(buf, cvs)), p.name).toBe(want);
            expect(hex(p.rootFromCvs(cvs)), p.name).toBe(want);
            for (const j of [0, pages - 1])
              expect(hex(p.pageCv(buf.subarray(j * 4096, (j + 1) * 4096), j)), p.name).toBe(
                hex(cvs.subarray(32 * j, 32 * j + 32)),
              );
            // A rewritten page: its new chaining value alone gives the new hash.
            const changed = Buffer.from(buf);
            for (const [k, e] of edits.entries()) {
              const j = e % pages;
              changed.set(k % 2 === 0 ? bytes(4096, seed + k + 1) : new Uint8Array(4096), j * 4096);
              cvs.set(p.pageCv(changed.subarray(j * 4096, (j + 1) * 4096), j), 32 * j);
            }
            expect(hex(p.rootFromCvs(cvs)), p.name).toBe(hex(paths.ts.strongHash(changed)));
          }
        }),
        { ...opts, numRuns: 30 },
      );
    },
    slow,
  );

  it("refuse inputs that are not a power of two of at least two pages", () => {
    for (const p of all) {
      expect(() => p.strongHashPages(new Uint8Array(4096), new Uint8Array(32)), p.name).toThrow(InvalidArgumentError);
      expect(() => p.strongHashPages(new Uint8Array(3 * 4096), new Uint8Array(96)), p.name).toThrow(
        InvalidArgumentError,
      );
      expect(() => p.strongHashPages(new Uint8Array(8192), new Uint8Array(32)), p.name).toThrow(/cvs holds 32 bytes/);
      expect(() => p.pageCv(new Uint8Array(4095), 0), p.name).toThrow(InvalidArgumentError);
      expect(() => p.pageCv(new Uint8Array(4096), -1), p.name).toThrow(InvalidArgumentError);
      expect(() => p.rootFromCvs(new Uint8Array(32)), p.name).toThrow(InvalidArgumentError);
    }
    expect([4096, 8192, 12288, 65536, 65537].map(pageTreePages)).toEqual([undefined, 2, undefined, 16, undefined]);
  });
});

describe("zstd chunks", () => {
  const text = Buffer.from("2026-12-05T21:00:00Z host-a dwcp: batch 3 chunk ok\n".repeat(4096));

  it("round-trips a compressible chunk at several levels, smaller than LZ4 would make it", async () => {
    for (const level of [-1, 1, 3]) {
      const packed = await compressChunk(text, { codec: "zstd", level });
      expect(packed.codec).toBe("zstd");
      expect(packed.data.length).toBeLessThan(text.length / 10);
      expect(Buffer.from(await decompressChunk(packed)).equals(text)).toBe(true);
      const into = Buffer.alloc(text.length);
      await decompressChunk(packed, into);
      expect(into.equals(text)).toBe(true);
    }
  });

  it("sends incompressible bytes as they are", async () => {
    const random = bytes(256 * 1024, 9);
    expect((await compressChunk(random, { codec: "zstd" })).codec).toBe("none");
  });

  it("samples the whole chunk, not its start: data behind incompressible bytes is compressed", async () => {
    // A package's compressed bytes, then text: the first 64 KiB alone would not compress.
    const moreText = Buffer.concat([text, text, text, text]).subarray(0, 768 * 1024);
    const mixed = Buffer.concat([bytes(256 * 1024, 11), moreText]);
    const packed = await compressChunk(mixed, { codec: "zstd" });
    expect(packed.codec).toBe("zstd");
    expect(packed.data.length).toBeLessThan(mixed.length * 0.3);
    expect(Buffer.from(await decompressChunk(packed)).equals(mixed)).toBe(true);
    // Mostly random with a little text: the spread sample still says it does not pay.
    const mostlyRandom = Buffer.concat([bytes(960 * 1024, 12), text.subarray(0, 64 * 1024)]);
    expect((await compressChunk(mostlyRandom, { codec: "zstd" })).codec).toBe("none");
  });

  it("spreads the sample over the chunk in SAMPLE_PIECES pieces, the first at its start", () => {
    const buf = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    expect(sampleOf(buf, 1000)).toBe(buf);
    const s = sampleOf(buf, 40);
    expect(s.length).toBe(40);
    const stride = Math.floor((1000 - 10) / (SAMPLE_PIECES - 1));
    for (let i = 0; i < SAMPLE_PIECES; i++)
      expect([...s.subarray(i * 10, i * 10 + 10)]).toEqual([...buf.subarray(i * stride, i * stride + 10)]);
    expect(s.at(-1)).toBe(buf[3 * stride + 9]);
  });

  it("refuses a frame that declares another size, carries a second frame, or is cut, before decoding", async () => {
    const packed = await compressChunk(text, { codec: "zstd" });
    const corrupt = (data: Uint8Array, rawLength = text.length): Promise<Uint8Array> =>
      decompressChunk({ codec: "zstd", data, rawLength });
    await expect(corrupt(packed.data, text.length - 1)).rejects.toBeInstanceOf(CompressedChunkCorruptError);
    await expect(corrupt(packed.data, text.length + 1)).rejects.toThrow(/declare/);
    await expect(corrupt(Buffer.concat([packed.data, packed.data]))).rejects.toThrow(/one frame/);
    await expect(corrupt(packed.data.subarray(0, packed.data.length - 3))).rejects.toThrow(/one frame/);
  });
});

describe("xor delta", () => {
  it("a page with a few changed bytes gives a small delta, and a chunk of such deltas compresses", async () => {
    const oldPage = bytes(4096, 7);
    const newPage = Uint8Array.from(oldPage);
    newPage[10]! ^= 1;
    newPage[2000]! ^= 0x80;
    newPage[4095]! ^= 0xff;
    const delta = xorDeltaEncode(oldPage, newPage);
    expect(delta.length).toBe(8 + 3 * 9); // three 1-byte literals, no trailing record
    expect(xorDeltaDecode(oldPage, delta).equals(newPage)).toBe(true);
    expect(xorDeltaEncode(oldPage, oldPage).length).toBe(16); // header + one [4096][0] record

    const oldChunk = bytes(64 * 4096, 8);
    const newChunk = Uint8Array.from(oldChunk);
    for (let p = 0; p < oldChunk.length; p += 4096) newChunk[p + 100]! ^= 0x11;
    const chunkDelta = xorDeltaEncode(oldChunk, newChunk);
    expect(chunkDelta.length).toBe(8 + 64 * 9 + 8);
    const packed = await compressChunk(chunkDelta);
    if (packed.codec === "none") console.warn("lz4-napi not installed: compressChunk stores chunks as is");
    else expect(packed.data.length).toBeLessThan(chunkDelta.length * 0.9);
    expect(Buffer.from(await decompressChunk(packed)).equals(chunkDelta)).toBe(true);
  });

  it("rejects corrupt deltas and mismatched lengths with typed errors", () => {
    const a = bytes(5000, 1);
    const b = bytes(5000, 2);
    const delta = xorDeltaEncode(a, b);
    const edited = Uint8Array.from(a);
    edited[10]! ^= 1;
    edited[4000]! ^= 1;
    const bad = Buffer.from(xorDeltaEncode(a, edited)); // [10,1,x] [3989,1,x] [999,0]
    expect(bad.length).toBe(8 + 9 + 9 + 8);
    bad.writeUInt32LE(0xffff, bad.length - 8); // the last record overruns: nothing may be written
    for (const p of all) {
      const target = Uint8Array.from(a);
      expect(() => p.xorDeltaDecode(target, bad, target)).toThrow(XorDeltaCorruptError);
      expect(hex(target)).toBe(hex(a));
      expect(() => p.xorDeltaDecode(a, delta.subarray(0, delta.length - 1))).toThrow(XorDeltaCorruptError);
      expect(() => p.xorDeltaDecode(a, delta, new Uint8Array(4999))).toThrow(InvalidArgumentError);
      expect(() => p.xorDeltaDecode(a.subarray(1), delta)).toThrow(XorDeltaCorruptError);
      expect(() => p.xorDeltaEncode(a, b.subarray(1))).toThrow(InvalidArgumentError);
    }
  });
});

describe("async variants equal the sync ones", () => {
  it(
    "on chunks big enough for the libuv pool, several at once",
    async () => {
      const chunks = [bytes(4 * MiB + 13, 3, 1), bytes(300_000, 4), new Uint8Array(MiB), bytes(1000, 5)];
      const results = await Promise.all(
        chunks.map(async (c) => ({
          analysis: await analyzeChunk(c),
          crc: await crc32cAsync(c, 77),
          fps: await fingerprintsAsync(c),
          hash: hex(await strongHash(c)),
        })),
      );
      chunks.forEach((c, i) => {
        expect(results[i]).toEqual({
          analysis: { crc32c: crc32c(c), allZero: isZero(c), zeroPages: zeroPages(c) },
          crc: crc32c(c, 77),
          fps: fingerprints(c),
          hash: hex(paths.ts.strongHash(c)),
        });
      });
    },
    slow,
  );

  it("fingerprintsAsync writes into a given view of a larger array, and refuses one of the wrong size", async () => {
    for (const c of [bytes(4 * MiB + 13, 6, 1), bytes(5000, 7)]) {
      const pages = Math.ceil(c.length / 4096);
      const all = new BigUint64Array(pages + 3).fill(9n);
      const into = all.subarray(2, 2 + pages);
      expect(await fingerprintsAsync(c, into)).toBe(into);
      expect(into).toEqual(fingerprints(c));
      expect([all[0], all[1], all[pages + 2]]).toEqual([9n, 9n, 9n]);
      await expect(fingerprintsAsync(c, all)).rejects.toThrow(/fingerprints/);
    }
  });
});

describe("validation and loading", () => {
  it("rejects bad arguments before any native call", async () => {
    expect(() => crc32c("abc" as unknown as Uint8Array)).toThrow(InvalidArgumentError);
    expect(() => crc32c(new Uint8Array(1), -1)).toThrow(/seed must be an integer/);
    expect(() => crc32cCombine(0, 0, 1.5)).toThrow(InvalidArgumentError);
    await expect(strongHash(null as unknown as Uint8Array)).rejects.toThrow(InvalidArgumentError);
  });

  it("DWCP_NATIVE: require fails typed, auto warns once, bad values are refused", async () => {
    expect(() => loadNative("require", "/nonexistent/dwcp_native.node")).toThrow(NativeModuleMissingError);
    const warned = new Promise<Error>((resolve) => process.once("warning", resolve));
    expect(loadNative("auto", "/nonexistent/dwcp_native.node").binding).toBeUndefined();
    expect((await warned).message).toMatch(/TypeScript fallback/);
    expect(loadNative("off").binding).toBeUndefined();
    expect(() => nativeMode("fast")).toThrow(NativeConfigError);
    expect(nativeMode(undefined)).toBe("auto");
  });

  it("capabilities names the live path of every kernel", () => {
    const caps = capabilities();
    expect(Object.keys(caps).sort()).toEqual(["crc32c", "fingerprint", "strongHash", "xorDelta", "zero", "zeroCopy"]);
    for (const v of Object.values(caps)) expect(v === "ts-fallback").toBe(!native);
  });
});
