import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DwcpError } from "#common/errors.js";
import {
  CLIENT_PREAUTH,
  CLIENT_SESSION,
  FrameDecoder,
  SERVER_IDLE,
  SERVER_PREAUTH,
  serverInBatch,
  type DecoderLimits,
} from "./decoder.js";
import { FRAME_CODES, HEADER_BYTES, writeHeader, type FrameKind } from "./frames.js";

// Fuzzing the data channel's frame decoder: 100,000 byte streams (half of them built around a
// well-formed header with random fields, so the cases reach the payload, table and chunk states)
// pushed in random pieces. The decoder must never throw (a malformed stream is a "violation"
// step) and never ask for or allocate a buffer beyond its limits' chunk bound.

const CHUNK_BOUND = 64 * 1024;
const LIMITS: DecoderLimits[] = [
  SERVER_PREAUTH,
  CLIENT_PREAUTH,
  CLIENT_SESSION,
  SERVER_IDLE,
  serverInBatch(CHUNK_BOUND),
];
const KINDS = Object.keys(FRAME_CODES) as FrameKind[];
const u32 = fc.oneof(
  fc.integer({ min: 0, max: 300 }),
  fc.constantFrom(0xffffffff, 2 ** 31, CHUNK_BOUND, CHUNK_BOUND + 1),
);

/** A header with random fields followed by random bytes. */
const framed = fc
  .record({
    kind: fc.constantFrom(...KINDS),
    flags: fc.integer({ min: 0, max: 7 }),
    payloadLength: u32,
    offset: fc.oneof(fc.nat(1 << 20), fc.constant(2 ** 60)),
    length: u32,
    crc32c: fc.nat(),
    segmentCount: fc.oneof(fc.integer({ min: 0, max: 4 }), u32),
    tail: fc.uint8Array({ maxLength: 96 }),
    tableHint: fc.array(fc.tuple(fc.nat(300), fc.nat(300)), { maxLength: 4 }),
  })
  .map((f) => {
    const table = new Uint8Array(f.tableHint.length * 8);
    const view = new DataView(table.buffer);
    f.tableHint.forEach(([rel, len], i) => {
      view.setUint32(i * 8, rel);
      view.setUint32(i * 8 + 4, len);
    });
    const out = new Uint8Array(HEADER_BYTES + table.length + f.tail.length);
    writeHeader(out, f.kind, f);
    out.set(table, HEADER_BYTES);
    out.set(f.tail, HEADER_BYTES + table.length);
    return out;
  });

const stream = fc.oneof(
  fc.uint8Array({ maxLength: 80 }),
  framed,
  fc.tuple(framed, framed).map(([a, b]) => concat(a, b)),
);

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Feeds `bytes` in pieces cut at `cuts`; returns how many steps the decoder produced. */
function run(limits: DecoderLimits, bytes: Uint8Array, cuts: number[]): number {
  const decoder = new FrameDecoder(limits);
  let steps = 0;
  let at = 0;
  const points = [...cuts.map((c) => c % (bytes.length + 1)).sort((x, y) => x - y), bytes.length];
  for (const end of points) {
    if (end > at) decoder.push(bytes.subarray(at, end));
    at = Math.max(at, end);
    for (;;) {
      const step = decoder.next();
      steps++;
      if (step.kind === "need-more" || step.kind === "violation") break;
      if (step.kind === "chunk-begin") {
        expect(step.header.length).toBeLessThanOrEqual(limits.maxChunkLength);
        decoder.provideChunkBuffer(new Uint8Array(step.header.length));
      } else if (step.kind === "chunk") {
        expect(step.header.length).toBeLessThanOrEqual(limits.maxChunkLength);
        if (step.packed) expect(step.packed.length).toBeLessThan(limits.maxChunkLength);
        if (step.data) expect(step.data.length).toBe(step.header.length);
      } else if (step.frame.kind === "CHUNK_OK" || step.frame.kind === "CHUNK_ERR") {
        expect(step.frame.offset).toBeLessThanOrEqual(Number.MAX_SAFE_INTEGER);
      }
    }
    if (decoder.next().kind === "violation") break;
  }
  expect(decoder.buffered).toBeLessThanOrEqual(bytes.length);
  return steps;
}

describe("FrameDecoder under fuzzing", () => {
  it("never throws and never exceeds the chunk bound (100,000 cases)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...LIMITS),
        stream,
        fc.array(fc.nat(400), { maxLength: 3 }),
        (limits, bytes, cuts) => {
          try {
            run(limits, bytes, cuts);
          } catch (err) {
            if (err instanceof DwcpError || (err as Error).name === "AssertionError") throw err;
            throw new TypeError(`decoder threw ${(err as Error).name}: ${(err as Error).message}`);
          }
        },
      ),
      { numRuns: 100_000, seed: 20261205 },
    );
  }, 120_000);

  it("refuses a CHUNK that declares more than the bound before any payload arrives", () => {
    const head = new Uint8Array(HEADER_BYTES);
    writeHeader(head, "CHUNK", { length: 0xffffffff, payloadLength: 0xffffffff, segmentCount: 1 });
    const d = new FrameDecoder(serverInBatch(CHUNK_BOUND));
    d.push(head);
    expect(d.next()).toMatchObject({ kind: "violation" });
  });
});
