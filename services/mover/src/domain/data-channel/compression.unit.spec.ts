import { describe, expect, it } from "vitest";
import { chooseCompression, linkRateFor, spareCores, type CompressionInputs } from "./compression.js";

const MBIT = 1e6 / 8;
const both = { lz4: true, zstd: true };
const auto = (o: Partial<CompressionInputs>): ReturnType<typeof chooseCompression> =>
  chooseCompression({
    mode: "auto",
    linkBytesPerSec: undefined,
    rttUs: undefined,
    spareCores: 2,
    available: both,
    ...o,
  });

describe("chooseCompression", () => {
  it("sends a 10 Gbit/s link's chunks as they are, or with LZ4, on 2 cores", () => {
    const c = auto({ linkBytesPerSec: 10_000 * MBIT, spareCores: 2 });
    expect(["none", "lz4"]).toContain(c.codec);
    expect(auto({ linkBytesPerSec: 10_000 * MBIT, spareCores: 0.5 }).codec).toBe("none");
  });

  it("uses zstd on a 200 Mbit/s link, at a higher level the more CPU is spare", () => {
    const busy = auto({ linkBytesPerSec: 200 * MBIT, spareCores: 0.25 });
    const idle = auto({ linkBytesPerSec: 200 * MBIT, spareCores: 2 });
    expect(busy.codec).toBe("zstd");
    expect(idle.codec).toBe("zstd");
    expect(idle.level).toBeGreaterThan(busy.level);
    // A core to spare keeps zstd 6 at the link's rate: 4% fewer bytes than zstd 3 is worth it.
    expect(auto({ linkBytesPerSec: 200 * MBIT, spareCores: 1 })).toEqual({ codec: "zstd", level: 6 });
    // A quarter of a core cannot: zstd 6 would leave the link idle.
    expect(auto({ linkBytesPerSec: 200 * MBIT, spareCores: 0.25 })).toEqual({ codec: "zstd", level: 3 });
  });

  it("without a measured rate, assumes a fast link on a LAN and a slower one across a WAN", () => {
    expect(auto({ rttUs: 200, spareCores: 1 }).codec).toBe("none");
    expect(auto({ rttUs: 50_000, spareCores: 1 }).codec).not.toBe("none");
  });

  it("never picks a codec this process lacks, and follows a forced mode", () => {
    expect(auto({ linkBytesPerSec: 200 * MBIT, available: { lz4: true, zstd: false } }).codec).toBe("lz4");
    expect(auto({ linkBytesPerSec: 200 * MBIT, available: { lz4: false, zstd: false } }).codec).toBe("none");
    const forced = (mode: CompressionInputs["mode"], available = both): string =>
      chooseCompression({ mode, linkBytesPerSec: 200 * MBIT, rttUs: 50_000, spareCores: 2, available }).codec;
    expect(forced("none")).toBe("none");
    expect(forced("lz4")).toBe("lz4");
    expect(forced("zstd")).toBe("zstd");
    expect(forced("zstd", { lz4: true, zstd: false })).toBe("none");
  });

  it("counts spare cores as the online ones less the load, at least a quarter", () => {
    expect(spareCores(2, 0.5)).toBe(1.5);
    expect(spareCores(2, 9)).toBe(0.25);
    expect(spareCores(8, -1)).toBe(8);
  });

  it("takes a batch's measured rate as the link's except on loopback, where only a limit counts", () => {
    const rate = (limit: number | undefined, measured: number | undefined, loopback: boolean): number | undefined =>
      linkRateFor({ limitBytesPerSec: limit, measuredBytesPerSec: measured, loopback });
    expect(rate(undefined, 150e6, false)).toBe(150e6);
    expect(rate(100e6, 150e6, false)).toBe(100e6);
    expect(rate(200e6, 150e6, false)).toBe(150e6);
    expect(rate(100e6, undefined, false)).toBe(100e6);
    expect(rate(undefined, undefined, false)).toBeUndefined();
    // Movers on one host, starved of CPU or waiting on the disk, measure their own pace: no codec.
    expect(rate(undefined, 150e6, true)).toBeUndefined();
    expect(auto({ linkBytesPerSec: rate(undefined, 150e6, true), rttUs: 30 }).codec).toBe("none");
    expect(auto({ linkBytesPerSec: rate(undefined, 150e6, false), rttUs: 30 }).codec).not.toBe("none");
    // A limit still turns compression on: it saves the bytes the limit counts.
    expect(rate(20e6, 150e6, true)).toBe(20e6);
    expect(auto({ linkBytesPerSec: rate(20e6, 150e6, true), rttUs: 30 }).codec).not.toBe("none");
  });
});
