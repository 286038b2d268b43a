import { randomBytes } from "node:crypto";
import { Readable, type Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { encodeBlockHeader } from "../../domain/data-channel/tunnel-blocks.js";
import { BlockCompressor, BlockDecompressor, TUNNEL_BLOCK_TARGET } from "./tunnel-codec.js";

async function collect(source: Readable, through: Transform): Promise<Buffer> {
  const parts: Buffer[] = [];
  await pipeline(source, through, async (chunks: AsyncIterable<Buffer>) => {
    for await (const c of chunks) parts.push(c);
  });
  return Buffer.concat(parts);
}

describe("tunnel codec", () => {
  it.each(["zstd", "lz4"] as const)(
    "%s: what goes in comes out, smaller on the wire where it compresses",
    async (codec) => {
      const pieces = [
        randomBytes(70_000),
        Buffer.alloc(3 * TUNNEL_BLOCK_TARGET, "abc"),
        Buffer.alloc(5),
        randomBytes(9),
      ];
      const raw = Buffer.concat(pieces);
      const compressor = new BlockCompressor({ codec, level: 1 });
      const wire = await collect(Readable.from(pieces), compressor);
      expect(compressor.rawBytes).toBe(raw.length);
      expect(compressor.wireBytes).toBe(wire.length);
      expect(wire.length).toBeLessThan(100_000);
      expect((await collect(Readable.from([wire]), new BlockDecompressor())).equals(raw)).toBe(true);
    },
  );

  it("fails on a block that does not decode, and on a stream cut inside a block", async () => {
    const bad = Buffer.concat([encodeBlockHeader("zstd", 1000, 4), Buffer.from([1, 2, 3, 4])]);
    await expect(collect(Readable.from([bad]), new BlockDecompressor())).rejects.toThrow(/1000 bytes/);
    const cut = Buffer.concat([encodeBlockHeader("none", 10, 10), Buffer.from([1, 2, 3])]);
    await expect(collect(Readable.from([cut]), new BlockDecompressor())).rejects.toThrow(/inside a block/);
  });
});
