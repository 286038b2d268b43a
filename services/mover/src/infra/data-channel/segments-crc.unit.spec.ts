import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { crc32c } from "#native/index.js";
import { segmentsFromZeroPages } from "../../domain/data-channel/segments.js";
import { segmentsCrc32c } from "./server-batch.js";

const PAGE = 4096;

describe("segmentsCrc32c", () => {
  it("is the CRC32C of the chunk with zeros outside its segments", () => {
    const chunk = fc.record({
      pages: fc.integer({ min: 1, max: 64 }),
      tail: fc.integer({ min: 0, max: PAGE - 1 }),
      data: fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }),
      seed: fc.integer({ min: 1, max: 255 }),
    });
    fc.assert(
      fc.property(chunk, ({ pages, tail, data, seed }) => {
        const length = pages * PAGE - (pages > 1 ? tail : 0);
        const bytes = new Uint8Array(length);
        const zeroPages = new Uint8Array(Math.ceil(length / PAGE));
        for (let p = 0; p < zeroPages.length; p++) {
          zeroPages[p] = data[p] === true ? 0 : 1;
          if (data[p] === true) for (let i = p * PAGE; i < Math.min(length, (p + 1) * PAGE); i += 97) bytes[i] = seed;
        }
        const segments = segmentsFromZeroPages(zeroPages, length);
        // Garbage in the gaps of the receive buffer is not counted: the gaps are zeros by definition.
        const received = new Uint8Array(bytes.length).fill(0xee);
        for (const s of segments) received.set(bytes.subarray(s.relOffset, s.relOffset + s.length), s.relOffset);
        expect(segmentsCrc32c(received, segments, length)).toBe(crc32c(bytes));
      }),
      { seed: 0x5e9, numRuns: 200 },
    );
  });
});
