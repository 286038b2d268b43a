import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CLIENT_PREAUTH,
  CLIENT_REHELLO,
  CLIENT_SESSION,
  FrameDecoder,
  SERVER_IDLE,
  SERVER_PREAUTH,
  SERVER_TUNNEL,
  CLIENT_TUNNEL,
  serverInBatch,
  type DecodeStep,
  type DecoderLimits,
} from "./decoder.js";
import {
  encodeBaseChunk,
  encodeChunk,
  encodeChunkHead,
  FLAG_BASE,
  encodeControl,
  FLAG_LZ4,
  FLAG_SEALED,
  FLAG_ZSTD,
  FLAG_ZERO,
  HEADER_BYTES,
  MAX_BASE_SUMS,
  MAX_CONTROL_PAYLOAD,
  writeHeader,
  type BatchBegin,
  type ChunkHeader,
  type ControlFrame,
  type FrameKind,
} from "./frames.js";

const MiB = 1024 * 1024;
const ALL: DecoderLimits = {
  accept: new Set<FrameKind>([
    "CHALLENGE",
    "HELLO",
    "AUTH_OK",
    "AUTH_FAIL",
    "BATCH_BEGIN",
    "CHUNK",
    "CHUNK_OK",
    "CHUNK_ERR",
    "BATCH_END",
    "BATCH_OK",
    "BATCH_ERR",
    "TUNNEL_OPEN",
    "TUNNEL_OK",
    "TUNNEL_ERR",
    "BASE_SUMS",
  ]),
  maxControlPayload: MAX_CONTROL_PAYLOAD,
  maxChunkLength: MiB,
};

const begin: BatchBegin = {
  migrationId: "mig-1",
  batch: 3,
  attempt: 1,
  destDir: "vms/a",
  destName: "disk0.img",
  volumeSizeBytes: 20 * MiB + 12345,
  chunkSizeBytes: MiB,
  firstChunk: 8,
  chunkCount: 8,
};

const controls: ControlFrame[] = [
  { kind: "CHALLENGE", nonce: new Uint8Array(32).fill(7) },
  { kind: "HELLO", migrationId: "mig-1", sourceHost: "host-a", mac: new Uint8Array(32).fill(9) },
  { kind: "AUTH_OK" },
  { kind: "HELLO", migrationId: "mig-1", sourceHost: "host-a", mac: new Uint8Array(32).fill(9), sealed: true },
  { kind: "AUTH_OK", sealed: true },
  { kind: "AUTH_FAIL", message: "authentication failed" },
  { kind: "BATCH_BEGIN", begin },
  { kind: "BATCH_BEGIN", begin: { ...begin, incremental: true } },
  { kind: "CHUNK_ERR", offset: 6 * MiB, failure: { code: "BASE_MISMATCH", message: "base differs" } },
  { kind: "CHUNK_ERR", offset: 7 * MiB, failure: { code: "NO_BASE", message: "no base file" } },
  { kind: "CHUNK_OK", offset: 2 ** 40 + 4096 },
  { kind: "CHUNK_ERR", offset: 5 * MiB, failure: { code: "CHECKSUM_MISMATCH", message: "crc" } },
  { kind: "BATCH_END", chunkCount: 8 },
  { kind: "BATCH_OK" },
  { kind: "BATCH_ERR", failure: { code: "NO_SPACE", message: "disk full" } },
  { kind: "HELLO", migrationId: "mig-1", sourceHost: "host-a", mac: new Uint8Array(32).fill(9), tunnel: true },
  { kind: "TUNNEL_OPEN", channel: "nbd" },
  { kind: "TUNNEL_OPEN", channel: "migration", codec: "zstd" },
  { kind: "TUNNEL_OPEN", channel: "nbd", sealed: true },
  { kind: "TUNNEL_OK" },
  { kind: "TUNNEL_OK", sealed: true },
  { kind: "TUNNEL_ERR", message: "no live migration expects it" },
  { kind: "BATCH_BEGIN", begin: { ...begin, incremental: true, baseSums: 2 ** 32 - 1 } },
  {
    kind: "BASE_SUMS",
    id: 3,
    offset: 8 * MiB,
    sums: [
      "none",
      { crc32c: 0xfeedf00d, blake3: new Uint8Array(32).fill(5) },
      { crc32c: 0, blake3: new Uint8Array(32).fill(1) },
    ],
  },
];

/** A 64 KiB + 100 byte chunk with data in pages 1-2 and in the short last page. */
function sampleChunk(): { header: ChunkHeader; logical: Uint8Array } {
  const length = 64 * 1024 + 100;
  const logical = new Uint8Array(length);
  for (let i = 4096; i < 3 * 4096; i++) logical[i] = (i * 31) & 0xff || 1;
  for (let i = 16 * 4096; i < length; i++) logical[i] = 0xab;
  const segments = [
    { relOffset: 4096, length: 8192 },
    { relOffset: 16 * 4096, length: 100 },
  ];
  return { header: { offset: 3 * MiB, length, crc32c: 0xdeadbeef, zero: false, segments }, logical };
}

/** Decode everything in `parts`, providing fresh chunk buffers; returns the steps (no need-more). */
type Decoded =
  | Exclude<DecodeStep, { kind: "need-more" | "chunk-begin" | "chunk" }>
  | { kind: "chunk"; header: ChunkHeader; data: string | undefined };

function decodeAll(parts: Uint8Array[], limits: DecoderLimits = ALL): Decoded[] {
  const decoder = new FrameDecoder(limits);
  const out: Decoded[] = [];
  for (const part of parts) {
    decoder.push(part);
    for (let step = decoder.next(); step.kind !== "need-more"; step = decoder.next()) {
      if (step.kind === "chunk-begin") {
        decoder.provideChunkBuffer(new Uint8Array(step.header.length).fill(0xee)); // stale bytes must be zeroed
        continue;
      }
      out.push(step.kind === "chunk" ? { ...step, data: step.data && digest(step.data) } : step);
      if (step.kind === "violation") return out;
    }
  }
  return out;
}

/** Compact stand-in for chunk bytes so deep equality stays cheap. */
function digest(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

const zeroChunk: ChunkHeader = { offset: 4 * MiB, length: MiB, crc32c: 0x1234, zero: true, segments: [] };
const baseDigest = Uint8Array.from({ length: 32 }, (_, i) => (i * 7 + 1) & 0xff);
const baseChunk: ChunkHeader = {
  offset: 5 * MiB,
  length: MiB,
  crc32c: 0xfeedf00d,
  zero: false,
  segments: [],
  base: baseDigest,
};

function stream(): { bytes: Uint8Array; expected: unknown[] } {
  const { header, logical } = sampleChunk();
  const bytes = concat([
    ...controls.map(encodeControl),
    encodeChunk(header, logical),
    encodeChunk(zeroChunk, new Uint8Array(0)),
    encodeBaseChunk(baseChunk, baseDigest),
  ]);
  const expected = [
    ...controls.map((frame) => ({ kind: "frame", frame })),
    { kind: "chunk", header, data: digest(logical) },
    { kind: "chunk", header: zeroChunk, data: undefined },
    { kind: "chunk", header: baseChunk, data: undefined },
  ];
  return { bytes, expected };
}

describe("frame codec", () => {
  it("round-trips every frame type", () => {
    const { bytes, expected } = stream();
    expect(decodeAll([bytes])).toEqual(expected);
  });

  it("decodes the same frames when fed one byte at a time", () => {
    const { bytes, expected } = stream();
    const parts = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
    expect(decodeAll(parts)).toEqual(expected);
  });

  it("decodes the same frames under any TCP fragmentation (seeded)", () => {
    const { bytes, expected } = stream();
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 40 }), (cuts) => {
        expect(decodeAll(splitAt(bytes, cuts))).toEqual(expected);
      }),
      { seed: 20_240_611, numRuns: 300 },
    );
  });

  it("zero-fills the gaps of a reused chunk buffer", () => {
    const { header, logical } = sampleChunk();
    const [step] = decodeAll([encodeChunk(header, logical)]);
    expect(step).toMatchObject({ kind: "chunk", data: digest(logical) });
  });
});

function header(kind: FrameKind, fields: Parameters<typeof writeHeader>[2] = {}): Uint8Array {
  const h = new Uint8Array(HEADER_BYTES);
  writeHeader(h, kind, fields);
  return h;
}

function firstViolation(bytes: Uint8Array, limits: DecoderLimits): string | undefined {
  const decoder = new FrameDecoder(limits);
  decoder.push(bytes);
  const step = decoder.next();
  return step.kind === "violation" ? step.message : undefined;
}

describe("limits, checked on the header before anything is allocated", () => {
  it("refuses a pre-auth HELLO claiming 4 GiB from its 32 header bytes alone", () => {
    expect(firstViolation(header("HELLO", { payloadLength: 0xffffffff }), SERVER_PREAUTH)).toMatch(/exceeds 4096/);
  });

  it("takes FLAG_SEALED only on HELLO (the offer) and AUTH_OK (the switch)", () => {
    for (const kind of ["BATCH_BEGIN", "BATCH_OK", "CHUNK_OK", "CHALLENGE"] as const)
      expect(firstViolation(header(kind, { flags: FLAG_SEALED }), ALL), kind).toMatch(/unexpected flags 8/);
    expect(firstViolation(header("AUTH_OK", { flags: FLAG_SEALED | 0x4 }), ALL)).toMatch(/unexpected flags 12/);
  });

  it("accepts only HELLO before authentication on the server", () => {
    for (const kind of ["BATCH_BEGIN", "CHUNK", "CHALLENGE", "BATCH_END"] as const) {
      expect(firstViolation(header(kind), SERVER_PREAUTH)).toMatch(/not allowed/);
    }
    expect(firstViolation(header("CHUNK_OK"), CLIENT_PREAUTH)).toMatch(/not allowed/);
    expect(firstViolation(header("CHUNK", { length: 4096 }), SERVER_IDLE)).toMatch(/not allowed/);
  });

  it("refuses control payloads over 64 KiB after authentication", () => {
    expect(firstViolation(header("BATCH_BEGIN", { payloadLength: 64 * 1024 + 1 }), SERVER_IDLE)).toMatch(/exceeds/);
    expect(firstViolation(header("BATCH_ERR", { payloadLength: 70_000 }), CLIENT_SESSION)).toMatch(/exceeds/);
  });

  it("refuses bad magic, version and type", () => {
    const bad = header("HELLO");
    bad[0] = 0x47; // 'G'ET / HTTP
    expect(firstViolation(bad, SERVER_PREAUTH)).toMatch(/magic/);
    const v2 = header("HELLO");
    v2[4] = 2;
    expect(firstViolation(v2, SERVER_PREAUTH)).toMatch(/version 2/);
    const t = header("HELLO");
    t[5] = 99;
    expect(firstViolation(t, SERVER_PREAUTH)).toMatch(/unknown frame type 99/);
  });

  it("refuses a stranger on its first wrong byte, before a whole header arrived", () => {
    const decoder = new FrameDecoder(SERVER_PREAUTH);
    decoder.push(new TextEncoder().encode("DW"));
    expect(decoder.next()).toEqual({ kind: "need-more" });
    decoder.push(new TextEncoder().encode("X"));
    expect(decoder.next()).toMatchObject({ kind: "violation", message: expect.stringMatching(/magic/) as unknown });
    expect(firstViolation(new TextEncoder().encode("GET / HTTP/1.1\r\n"), SERVER_PREAUTH)).toMatch(/magic/);
  });

  it("refuses chunks longer than the batch's chunk size or with impossible tables", () => {
    const limits = serverInBatch(MiB);
    expect(firstViolation(header("CHUNK", { length: MiB + 1, flags: FLAG_ZERO }), limits)).toMatch(
      /outside 1\.\.1048576/,
    );
    expect(
      firstViolation(header("CHUNK", { length: 8192, segmentCount: 3, payloadLength: 24 + 8192 }), limits),
    ).toMatch(/segments for/);
    expect(firstViolation(header("CHUNK", { length: 8192, segmentCount: 1, payloadLength: 8 + 8193 }), limits)).toMatch(
      /does not fit/,
    );
    expect(firstViolation(header("CHUNK", { length: 8192 }), limits)).toMatch(/ZERO flag/);
    expect(firstViolation(header("CHUNK", { length: 8192, flags: 8 }), limits)).toMatch(/flags/);
  });

  it("refuses misaligned, overlapping or miscounted segments", () => {
    const { header: h, logical } = sampleChunk();
    const bad = (segments: ChunkHeader["segments"]): string | undefined => {
      const steps = decodeAll([encodeChunk({ ...h, segments }, logical)], serverInBatch(MiB));
      const last = steps.at(-1);
      return last?.kind === "violation" ? last.message : undefined;
    };
    expect(bad([{ relOffset: 100, length: 4096 }])).toMatch(/aligned/);
    expect(
      bad([
        { relOffset: 0, length: 8192 },
        { relOffset: 4096, length: 4096 },
      ]),
    ).toMatch(/overlaps/);
    expect(bad([{ relOffset: 0, length: 100 }])).toMatch(/whole pages/);
    expect(bad([{ relOffset: 16 * 4096, length: 8192 }])).toMatch(/past the chunk/);
  });

  it("refuses malformed control payloads and stays failed", () => {
    const frame = encodeControl({ kind: "BATCH_BEGIN", begin: { ...begin, destName: "" } });
    const decoder = new FrameDecoder(SERVER_IDLE);
    decoder.push(frame);
    expect(decoder.next()).toMatchObject({ kind: "violation" });
    decoder.push(encodeControl({ kind: "BATCH_BEGIN", begin }));
    expect(decoder.next()).toMatchObject({ kind: "violation" });
  });

  it("takes a tunnel's channel only on a connection that asked for one, and only a well-formed one", () => {
    const open = encodeControl({ kind: "TUNNEL_OPEN", channel: "migration" });
    expect(decodeAll([open], SERVER_IDLE)).toEqual([
      { kind: "violation", message: expect.stringMatching(/TUNNEL_OPEN is not allowed/) as unknown },
    ]);
    expect(decodeAll([open], SERVER_TUNNEL)).toEqual([
      { kind: "frame", frame: { kind: "TUNNEL_OPEN", channel: "migration" } },
    ]);
    const bad = encodeControl({ kind: "TUNNEL_OPEN", channel: "../sock" });
    expect(decodeAll([bad], SERVER_TUNNEL)).toEqual([
      { kind: "violation", message: expect.stringMatching(/invalid tunnel channel/) as unknown },
    ]);
    // The bytes after TUNNEL_OK are the tunnel's: handed over whole, not decoded.
    const decoder = new FrameDecoder(CLIENT_TUNNEL);
    decoder.push(concat([encodeControl({ kind: "TUNNEL_OK" }), new Uint8Array([1, 2, 3])]));
    expect(decoder.next()).toEqual({ kind: "frame", frame: { kind: "TUNNEL_OK" } });
    expect([...decoder.takeRest()]).toEqual([1, 2, 3]);
    expect(decoder.buffered).toBe(0);
  });

  it("refuses a HELLO whose ids are outside the id alphabet", () => {
    const hello = encodeControl({ kind: "HELLO", migrationId: "../x", sourceHost: "h", mac: new Uint8Array(32) });
    expect(decodeAll([hello], SERVER_PREAUTH)).toEqual([
      { kind: "violation", message: expect.stringMatching(/HELLO/) as unknown },
    ]);
  });

  it("answers need-more, not a violation, for a truncated but valid prefix", () => {
    const decoder = new FrameDecoder(SERVER_PREAUTH);
    decoder.push(header("HELLO", { payloadLength: 40 }));
    expect(decoder.next()).toEqual({ kind: "need-more" });
    expect(decoder.atFrameBoundary).toBe(false);
  });
});

describe("FrameDecoder direct receive (what the native reader does)", () => {
  it("assembles the same chunk when payload bytes are received straight into the target", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 0, max: 200 }),
        (reads, headExtra) => {
          const { header, logical } = sampleChunk();
          const bytes = encodeChunk(header, logical);
          const decoder = new FrameDecoder(ALL);
          // The staging read takes the header, the table and maybe a few payload bytes.
          const tableEnd = HEADER_BYTES + header.segments.length * 8;
          let at = Math.min(bytes.length, tableEnd + headExtra);
          decoder.push(bytes.slice(0, at));
          let step = decoder.next();
          expect(step.kind).toBe("chunk-begin");
          const target = new Uint8Array(header.length).fill(0xee);
          decoder.provideChunkBuffer(target);
          let i = 0;
          for (step = decoder.next(); step.kind === "need-more"; step = decoder.next()) {
            const direct = decoder.directTarget();
            expect(direct).toBeDefined();
            if (direct === undefined) return;
            const n = Math.min(direct.length, reads[i++ % reads.length] ?? 1);
            // What a recv into target[direct.at..] would deliver: the next bytes of the stream.
            direct.target.set(bytes.subarray(at, at + n), direct.at);
            at += n;
            decoder.advanceDirect(n);
          }
          expect(step.kind).toBe("chunk");
          expect(at).toBe(bytes.length);
          if (step.kind === "chunk") expect(digest(step.data ?? new Uint8Array())).toBe(digest(logical));
          expect(decoder.atFrameBoundary).toBe(true);
        },
      ),
      { seed: 2026, numRuns: 200 },
    );
  });

  it("offers no direct target while bytes are queued or outside chunk data, and refuses overruns", () => {
    const { header, logical } = sampleChunk();
    const bytes = encodeChunk(header, logical);
    const decoder = new FrameDecoder(ALL);
    expect(decoder.directTarget()).toBeUndefined();
    decoder.push(bytes.slice(0, HEADER_BYTES + header.segments.length * 8 + 10));
    expect(decoder.next().kind).toBe("chunk-begin");
    expect(decoder.directTarget()).toBeUndefined();
    decoder.provideChunkBuffer(new Uint8Array(header.length));
    expect(decoder.directTarget()).toBeUndefined(); // 10 payload bytes still queued
    expect(decoder.next()).toEqual({ kind: "need-more" });
    const direct = decoder.directTarget();
    expect(direct).toBeDefined();
    expect(() => decoder.advanceDirect((direct?.length ?? 0) + 1)).toThrow(/outside a direct target/);
  });
});

describe("FrameDecoder compressed chunks (FLAG_LZ4)", () => {
  const { header } = sampleChunk();
  const dataBytes = header.segments.reduce((n, s) => n + s.length, 0);
  const packed = new Uint8Array(100).map((_, i) => i);

  it("hands over the packed bytes whole, however TCP splits them, with no chunk-begin", () => {
    const bytes = concat([encodeChunkHead({ ...header, packedLength: packed.length }), packed]);
    for (const cut of [1, 33, 40, bytes.length - 1]) {
      const decoder = new FrameDecoder(ALL);
      const steps: DecodeStep[] = [];
      for (const part of splitAt(bytes, [cut])) {
        decoder.push(part);
        for (let s = decoder.next(); s.kind !== "need-more"; s = decoder.next()) steps.push(s);
      }
      expect(steps).toHaveLength(1);
      const [step] = steps;
      expect(step?.kind).toBe("chunk");
      if (step?.kind === "chunk") {
        expect(step.data).toBeUndefined();
        expect(step.packed).toEqual(packed);
        expect(step.header.packedLength).toBe(packed.length);
      }
    }
  });

  it("refuses a compressed chunk that does not shrink, and a compressed zero chunk", () => {
    const big = new Uint8Array(dataBytes);
    const decoder = new FrameDecoder(ALL);
    decoder.push(concat([encodeChunkHead({ ...header, packedLength: dataBytes }), big]));
    const refused = decoder.next();
    expect(refused.kind === "violation" && refused.message).toMatch(/compressed bytes/);
    const zeroPacked = new Uint8Array(HEADER_BYTES);
    writeHeader(zeroPacked, "CHUNK", {
      flags: FLAG_ZERO | FLAG_LZ4,
      payloadLength: 0,
      offset: 0,
      length: MiB,
      crc32c: 0,
      segmentCount: 0,
    });
    const d2 = new FrameDecoder(ALL);
    d2.push(zeroPacked);
    const zero = d2.next();
    expect(zero.kind === "violation" && zero.message).toMatch(/zero chunk/);
  });
});

describe("FrameDecoder compressed chunks (FLAG_ZSTD)", () => {
  const { header } = sampleChunk();
  const packed = new Uint8Array(100).map((_, i) => 255 - i);

  it("names the codec of a zstd chunk and keeps LZ4 the codec of FLAG_LZ4", () => {
    for (const codec of ["zstd", "lz4"] as const) {
      const decoder = new FrameDecoder(ALL);
      decoder.push(concat([encodeChunkHead({ ...header, packedLength: packed.length, codec }), packed]));
      const step = decoder.next();
      expect(step.kind).toBe("chunk");
      if (step.kind === "chunk") {
        expect(step.header.codec).toBe(codec);
        expect(step.packed).toEqual(packed);
      }
    }
  });

  it("refuses a chunk flagged as both LZ4 and zstd, and a zstd zero chunk", () => {
    for (const [flags, why] of [
      [FLAG_LZ4 | FLAG_ZSTD, /one codec/],
      [FLAG_ZERO | FLAG_ZSTD, /zero chunk/],
    ] as const) {
      const bytes = new Uint8Array(HEADER_BYTES);
      writeHeader(bytes, "CHUNK", { flags, payloadLength: 0, offset: 0, length: MiB, crc32c: 0, segmentCount: 0 });
      const decoder = new FrameDecoder(ALL);
      decoder.push(bytes);
      const step = decoder.next();
      expect(step.kind === "violation" && step.message).toMatch(why);
    }
  });
});

describe("BASE chunks", () => {
  const inBatch = serverInBatch(MiB);

  it("encodes the flag, the source's CRC32C and the BLAKE3 as the whole payload", () => {
    const bytes = encodeBaseChunk(baseChunk, baseDigest);
    expect(bytes.length).toBe(HEADER_BYTES + 32);
    const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
    expect(view.getUint16(6)).toBe(FLAG_BASE);
    expect(view.getUint32(8)).toBe(32);
    expect(view.getUint32(24)).toBe(0xfeedf00d);
    expect(view.getUint32(28)).toBe(0);
    expect(encodeChunkHead(baseChunk)).toEqual(bytes);
    expect(decodeAll([bytes], inBatch)).toEqual([{ kind: "chunk", header: baseChunk, data: undefined }]);
  });

  it("refuses a digest that is not 32 bytes", () => {
    expect(() => encodeBaseChunk(baseChunk, new Uint8Array(31))).toThrow(/32-byte BLAKE3/);
  });

  it.each([
    ["with ZERO", { flags: FLAG_BASE | FLAG_ZERO, payloadLength: 32, length: MiB }, /no other flag/],
    ["with a codec", { flags: FLAG_BASE | FLAG_LZ4, payloadLength: 32, length: MiB }, /no other flag/],
    ["with segments", { flags: FLAG_BASE, payloadLength: 40, length: MiB, segmentCount: 1 }, /no segments/],
    ["with a short digest", { flags: FLAG_BASE, payloadLength: 31, length: MiB }, /32-byte BLAKE3/],
    ["longer than the batch's chunks", { flags: FLAG_BASE, payloadLength: 32, length: MiB + 1 }, /outside/],
  ])("refuses a BASE chunk %s", (_, fields, message) => {
    const bytes = concat([header("CHUNK", fields), new Uint8Array(fields.payloadLength)]);
    expect(firstViolation(bytes, inBatch)).toMatch(message);
  });
});

describe("BASE_SUMS", () => {
  const sums = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ crc32c: i + 1, blake3: new Uint8Array(32).fill(i) }));

  it("refuses an empty frame, more entries than fit a control payload, and a payload of another length", () => {
    expect(() => encodeControl({ kind: "BASE_SUMS", id: 0, offset: 0, sums: [] })).toThrow(/1\.\./);
    expect(() => encodeControl({ kind: "BASE_SUMS", id: 0, offset: 0, sums: sums(MAX_BASE_SUMS + 1) })).toThrow(
      /1\.\./,
    );
    const good = encodeControl({ kind: "BASE_SUMS", id: 1, offset: 0, sums: sums(MAX_BASE_SUMS) });
    expect(decodeAll([good], CLIENT_SESSION)).toHaveLength(1);
    expect(
      firstViolation(
        concat([header("BASE_SUMS", { length: 2, payloadLength: 36 }), new Uint8Array(36)]),
        CLIENT_SESSION,
      ),
    ).toMatch(/bad length/);
    expect(firstViolation(header("BASE_SUMS", { length: 0 }), CLIENT_SESSION)).toMatch(/names 0 chunks/);
  });

  it("is taken by the sender in a batch and while a later HELLO is answered, never before authentication", () => {
    const frame = encodeControl({ kind: "BASE_SUMS", id: 1, offset: 0, sums: sums(1) });
    expect(decodeAll([frame], CLIENT_REHELLO)).toHaveLength(1);
    expect(firstViolation(frame, CLIENT_PREAUTH)).toMatch(/not allowed/);
    expect(firstViolation(frame, SERVER_IDLE)).toMatch(/not allowed/);
  });
});
