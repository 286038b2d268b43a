import { describe, expect, it } from "vitest";
import { fillRandom, prng } from "./image.js";

describe("prng", () => {
  it("is seeded: the same seed gives the same words, another seed others", () => {
    const words = (seed: number): number[] => Array.from({ length: 8 }, prng(seed));
    expect(words(7)).toEqual(words(7));
    expect(words(7)).not.toEqual(words(8));
    for (const w of words(0)) expect(w).toBeGreaterThanOrEqual(0);
  });

  it("does not repeat within 8 MiB, so its bytes are no food for a compressor's window", () => {
    // The data channel's compressors see repeats a whole chunk apart (zstd's window is MiBs):
    // a generator with a short period made "incompressible" test images shrink 100-fold.
    const buf = Buffer.alloc(8 * 1024 * 1024);
    fillRandom(buf, prng(7));
    const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    const head = [words[0], words[1], words[2]];
    let repeats = 0;
    for (let i = 1; i + 2 < words.length; i++)
      if (words[i] === head[0] && words[i + 1] === head[1] && words[i + 2] === head[2]) repeats += 1;
    expect(repeats).toBe(0);
  });
});
