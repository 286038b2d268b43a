import { pino } from "pino";
import type { Logger } from "#common/logger.js";
import { describe, expect, it } from "vitest";
import {
  MAX_REASON_CHARS,
  OTHER_REASON,
  RefusalLog,
  RefusalTally,
  REFUSALS_SUMMARY_MSG,
  type RefusalLimits,
} from "./refusal-log.js";

const limits: RefusalLimits = { intervalMs: 1000, burst: 3, maxReasons: 2, maxPeers: 4 };

describe("RefusalTally", () => {
  it("logs the first `burst` refusals of a window and counts the rest", () => {
    const t = new RefusalTally(limits);
    const verdicts = [0, 1, 2, 3, 4, 5].map((i) => t.note(i, "10.0.0.1", "bad hello"));
    expect(verdicts).toEqual(["log", "log", "log", "count", "count", "count"]);
    expect(t.flush(999)).toBeUndefined(); // the window is still open
    expect(t.flush(1000)).toEqual({
      suppressed: 3,
      refused: 6,
      byReason: { "bad hello": 6 },
      peers: 1,
      peersCapped: false,
      windowMs: 1000,
    });
    expect(t.windowEnd).toBeUndefined();
  });

  it("opens a new window (with a new burst) after intervalMs, and a quiet window has no summary", () => {
    const t = new RefusalTally(limits);
    expect(t.note(0, "p", "r")).toBe("log");
    expect(t.flush(5000)).toBeUndefined(); // nothing was suppressed
    for (let i = 0; i < 5; i++) t.note(10, "p", "r");
    expect(t.note(1010, "p", "r")).toBe("log"); // a new window: its summary was taken by note
    expect(t.flush(1010)).toBeUndefined();
  });

  it("bounds reasons and peers: extra reasons are 'other', extra peers make the count a lower bound", () => {
    const t = new RefusalTally(limits);
    for (let i = 0; i < 10; i++) t.note(i, `10.0.0.${i}`, i < 2 ? `reason ${i}` : `junk ${i}`);
    const s = t.flush(0, true);
    expect(s?.byReason).toEqual({ "reason 0": 1, "reason 1": 1, [OTHER_REASON]: 8 });
    expect(s).toMatchObject({ refused: 10, suppressed: 7, peers: 4, peersCapped: true });
  });

  it("cuts a long reason (it may echo what the peer sent)", () => {
    const t = new RefusalTally({ ...limits, burst: 0 });
    t.note(0, "p", "x".repeat(10_000));
    const [reason] = Object.keys(t.flush(0, true)?.byReason ?? {});
    expect(reason?.length).toBe(MAX_REASON_CHARS + 1);
  });
});

describe("RefusalLog", () => {
  const capture = (): { lines: Record<string, unknown>[]; log: Logger } => {
    const lines: Record<string, unknown>[] = [];
    const log: Logger = pino(
      { level: "debug" },
      { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) },
    );
    return { lines, log };
  };

  it("writes burst lines and one summary per window however many refusals there are", () => {
    const { lines, log } = capture();
    let now = 0;
    const r = new RefusalLog(log, { intervalMs: 1000, burst: 2 }, () => now);
    for (let i = 0; i < 500; i++) r.refused({ peer: `p${i % 7}`, reason: "no HELLO", msg: "refused", fields: { i } });
    now = 1000;
    for (let i = 0; i < 500; i++) r.refused({ peer: "q", reason: "TLS", msg: "refused" });
    r.close();
    const singles = lines.filter((l) => l["msg"] === "refused");
    const summaries = lines.filter((l) => l["msg"] === REFUSALS_SUMMARY_MSG);
    expect(singles.map((l) => l["i"] ?? "q")).toEqual([0, 1, "q", "q"]);
    expect(summaries).toHaveLength(2);
    expect(summaries[0]).toMatchObject({ refused: 500, suppressed: 498, peers: 7, byReason: { "no HELLO": 500 } });
    expect(summaries[1]).toMatchObject({ refused: 500, suppressed: 498, peers: 1, byReason: { TLS: 500 } });
  });

  it("writes a window's summary when it ends, without another refusal", async () => {
    const lines: Record<string, unknown>[] = [];
    let summarized!: () => void;
    const summary = new Promise<void>((resolve) => (summarized = resolve));
    const log: Logger = pino(
      { level: "debug" },
      {
        write: (s: string) => {
          const line = JSON.parse(s) as Record<string, unknown>;
          lines.push(line);
          if (line["msg"] === REFUSALS_SUMMARY_MSG) summarized();
        },
      },
    );
    const r = new RefusalLog(log, { intervalMs: 20, burst: 1 });
    for (let i = 0; i < 5; i++) r.refused({ peer: "p", reason: "r", msg: "refused" });
    await summary; // the window's timer, not a refusal or close(), wrote it
    expect(lines.find((l) => l["msg"] === REFUSALS_SUMMARY_MSG)).toMatchObject({ refused: 5, suppressed: 4 });
    r.close();
    expect(lines.filter((l) => l["msg"] === REFUSALS_SUMMARY_MSG)).toHaveLength(1);
  });
});
