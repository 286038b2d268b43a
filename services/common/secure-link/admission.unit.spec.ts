import { describe, expect, it } from "vitest";
import { Admission, EVICTED_FOR_NEWER, REFUSED_FULL } from "./admission.js";

describe("Admission", () => {
  it("keeps at most maxPendingPerPeer pending per address: the same peer's oldest gives way", () => {
    const a = new Admission({ maxPending: 10, maxPendingPerPeer: 2, handshakeTimeoutMs: 60_000, minAgeToEvictMs: 0 });
    const evicted: string[] = [];
    const t = ["x1", "x2", "x3"].map((n) => a.admit("10.0.0.1", (r) => evicted.push(`${n}: ${r}`)));
    a.admit("10.0.0.2", () => evicted.push("other"));
    expect(evicted).toEqual([`x1: ${EVICTED_FOR_NEWER}`]);
    expect(a.pendingCount).toBe(3);
    for (const x of t) x.release();
  });

  it("keeps at most maxPending in all: the oldest gives way, and authenticated ones never count", () => {
    const a = new Admission({ maxPending: 3, maxPendingPerPeer: 3, handshakeTimeoutMs: 60_000, minAgeToEvictMs: 0 });
    const evicted: number[] = [];
    const session = a.admit("p0", () => evicted.push(0));
    session.authenticated();
    const tickets = [1, 2, 3, 4, 5].map((i) => a.admit(`p${i}`, () => evicted.push(i)));
    expect(evicted).toEqual([1, 2]);
    expect(a.pendingCount).toBe(3);
    expect(a.dropped).toBe(2);
    for (const t of tickets) t.release();
    expect(a.pendingCount).toBe(0);
  });

  it("refuses a newcomer rather than cut short a handshake younger than minAgeToEvictMs", () => {
    const a = new Admission({
      maxPending: 2,
      maxPendingPerPeer: 2,
      handshakeTimeoutMs: 60_000,
      minAgeToEvictMs: 60_000,
    });
    const reasons: string[] = [];
    const kept = [a.admit("p", (r) => reasons.push(`1 ${r}`)), a.admit("q", (r) => reasons.push(`2 ${r}`))];
    a.admit("r", (r) => reasons.push(`3 ${r}`));
    expect(reasons).toEqual([`3 ${REFUSED_FULL}`]);
    expect(a.pendingCount).toBe(2);
    for (const t of kept) t.release();
  });

  it("drops a connection that does not authenticate before its deadline", async () => {
    const a = new Admission({ handshakeTimeoutMs: 20 });
    const reason = await new Promise<string>((resolve) => a.admit("p", resolve));
    expect(reason).toMatch(/no successful handshake within 20 ms/);
    expect(a.pendingCount).toBe(0);
  });

  it("refuses limits that are not positive integers", () => {
    expect(() => new Admission({ maxPending: 0 })).toThrow(/maxPending/);
  });
});
