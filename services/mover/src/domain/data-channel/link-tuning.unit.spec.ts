import { describe, expect, it } from "vitest";
import { DEFAULT_WAN_STREAMS, MAX_STREAMS, streamsFor, stripeRuns } from "./batch.js";
import { chooseCongestion, planTuning, type KernelNet } from "./link-tuning.js";

const MiB = 1024 * 1024;
const kernel: KernelNet = {
  wmemMax: 4 * MiB,
  rmemMax: 4 * MiB,
  tcpWmemMax: 4 * MiB,
  tcpRmemMax: 32 * MiB,
  available: ["reno", "cubic", "bbr"],
  allowed: ["reno", "bbr"],
};

describe("socket tuning plan", () => {
  it("leaves autotuning alone on a short link", () => {
    const p = planTuning(kernel, 40, undefined);
    expect(p).toMatchObject({ sndbuf: undefined, rcvbuf: undefined, congestion: "bbr" });
    expect(p.bdpBytes).toBe(50_000);
  });

  it("sets the send buffer where the BDP is beyond autotuning, capped by net.core.wmem_max", () => {
    // 200 Mbit/s × 50 ms = 1.25 MB in flight: 2.5 MB of buffer, within tcp_wmem's 4 MiB.
    expect(planTuning(kernel, 50_000, 25_000_000).sndbuf).toBeUndefined();
    // 1 Gbit/s × 50 ms = 6.25 MB: autotuning stops at 4 MiB; the explicit size is capped at 4 MiB
    // (the kernel doubles it to 8 MiB of buffer).
    const p = planTuning(kernel, 50_000, 125_000_000);
    expect(p.sndbuf).toBe(4 * MiB);
    expect(p.rcvbuf).toBeUndefined(); // tcp_rmem reaches 32 MiB
  });

  it("does not set a size that would lower the ceiling", () => {
    const small = { ...kernel, wmemMax: 1 * MiB };
    expect(planTuning(small, 150_000, 125_000_000).sndbuf).toBeUndefined();
  });

  it("prefers BBR, then CUBIC; allowed ones first; none if the kernel has neither", () => {
    expect(chooseCongestion(kernel)).toBe("bbr");
    expect(chooseCongestion({ available: ["reno", "cubic"], allowed: ["reno", "cubic"] })).toBe("cubic");
    expect(chooseCongestion({ available: ["reno", "cubic", "bbr"], allowed: ["reno", "cubic"] })).toBe("cubic");
    expect(chooseCongestion({ available: ["bbr"], allowed: [] })).toBe("bbr");
    expect(chooseCongestion({ available: ["reno"], allowed: ["reno"] })).toBeUndefined();
  });
});

describe("stripes", () => {
  it("stripes by default only a WAN link that backs off on loss, else as asked, never past the chunks", () => {
    expect(streamsFor(undefined, { rttUs: 60 }, 64)).toBe(1);
    expect(streamsFor(undefined, undefined, 64)).toBe(1);
    expect(streamsFor(undefined, { rttUs: 50_000, congestion: "cubic" }, 64)).toBe(DEFAULT_WAN_STREAMS);
    expect(streamsFor(undefined, { rttUs: 50_000 }, 64)).toBe(DEFAULT_WAN_STREAMS);
    expect(streamsFor(undefined, { rttUs: 50_000, congestion: "bbr" }, 64)).toBe(1);
    expect(streamsFor(4, { rttUs: 50_000, congestion: "bbr" }, 64)).toBe(4);
    expect(streamsFor(8, { rttUs: 60 }, 64)).toBe(8);
    expect(streamsFor(8, { rttUs: 60 }, 3)).toBe(3);
    expect(streamsFor(99, { rttUs: 60 }, 64)).toBe(MAX_STREAMS);
  });

  it("splits into contiguous runs that differ by at most one chunk and cover the batch once", () => {
    expect(stripeRuns(10, 13, 3)).toEqual([
      { firstChunk: 10, chunkCount: 5 },
      { firstChunk: 15, chunkCount: 4 },
      { firstChunk: 19, chunkCount: 4 },
    ]);
    expect(stripeRuns(0, 2, 4)).toEqual([
      { firstChunk: 0, chunkCount: 1 },
      { firstChunk: 1, chunkCount: 1 },
    ]);
    for (const [count, n] of [
      [64, 4],
      [7, 7],
      [1, 1],
    ] as const) {
      const runs = stripeRuns(5, count, n);
      expect(runs.reduce((s, r) => s + r.chunkCount, 0)).toBe(count);
      runs.forEach(
        (r, i) => i > 0 && expect(r.firstChunk).toBe((runs[i - 1]?.firstChunk ?? 0) + (runs[i - 1]?.chunkCount ?? 0)),
      );
    }
  });
});
