import { describe, expect, it } from "vitest";
import { encodeBlockHeader, MAX_TUNNEL_BLOCK, TUNNEL_BLOCK_HEADER_BYTES, TunnelBlockDecoder } from "./tunnel-blocks.js";

const block = (codec: "none" | "lz4" | "zstd", raw: number, data: Uint8Array): Uint8Array => {
  const out = new Uint8Array(TUNNEL_BLOCK_HEADER_BYTES + data.length);
  out.set(encodeBlockHeader(codec, raw, data.length));
  out.set(data, TUNNEL_BLOCK_HEADER_BYTES);
  return out;
};

describe("tunnel blocks", () => {
  it("splits blocks however the bytes arrive", () => {
    const a = block("none", 5, Uint8Array.from([1, 2, 3, 4, 5]));
    const b = block("zstd", 1000, Uint8Array.from([9, 8, 7]));
    const stream = new Uint8Array([...a, ...b]);
    for (const cut of [1, 3, TUNNEL_BLOCK_HEADER_BYTES, a.length, a.length + 4, stream.length - 1]) {
      const d = new TunnelBlockDecoder();
      const got: unknown[] = [];
      for (const part of [stream.subarray(0, cut), stream.subarray(cut)]) {
        d.push(part);
        for (let s = d.next(); !("kind" in s); s = d.next()) got.push({ ...s, data: [...s.data] });
      }
      expect(got).toEqual([
        { codec: "none", rawLength: 5, data: [1, 2, 3, 4, 5] },
        { codec: "zstd", rawLength: 1000, data: [9, 8, 7] },
      ]);
      expect(d.buffered).toBe(0);
      expect(d.next()).toEqual({ kind: "need" });
    }
  });

  it.each([
    ["an unknown codec", Uint8Array.from([7, 0, 0, 0, 1, 0, 0, 0, 1, 0])],
    ["an empty block", encodeBlockHeader("none", 0, 0)],
    ["a block over the largest", encodeBlockHeader("lz4", MAX_TUNNEL_BLOCK + 1, 10)],
    ["a stored block whose data is not its raw length", encodeBlockHeader("none", 10, 9)],
    ["a compressed block longer than its raw bytes", encodeBlockHeader("zstd", 10, 11)],
    ["a compressed block with no data", encodeBlockHeader("lz4", 10, 0)],
  ])("refuses %s from its header alone, for good", (_what, header) => {
    const d = new TunnelBlockDecoder();
    d.push(header);
    const step = d.next();
    expect(step).toMatchObject({ kind: "violation" });
    d.push(block("none", 1, Uint8Array.from([0])));
    expect(d.next()).toEqual(step);
  });
});
