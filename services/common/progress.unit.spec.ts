import { createUser } from "@nats-io/nkeys";
import { headers } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import type { BatchProgress } from "#schemas/index.js";
import { takeProgress } from "./progress.js";
import { EventSigner, EventVerifier, INSECURE, type EventTrust } from "./signing.js";

const moverA = new EventSigner(createUser());
const moverB = new EventSigner(createUser());
const trust: EventTrust = {
  insecure: false,
  verifier: new EventVerifier({
    version: 1,
    principals: {
      [moverA.publicKey]: { role: "mover-a", host: "a" },
      [moverB.publicKey]: { role: "mover-b", host: "b" },
    },
  }),
};
const report = (o: Partial<BatchProgress> = {}): BatchProgress => ({
  type: "BatchProgress",
  version: 1,
  migrationId: "m1",
  batch: 0,
  attempt: 0,
  host: "a",
  chunks: 2,
  bytes: 3,
  dataBytes: 2,
  zeroBytes: 1,
  wireBytes: 2,
  at: "2026-01-01T00:00:00.000Z",
  ...o,
});
function message(p: BatchProgress, signer?: EventSigner, subject = `dwcp.progress.${p.migrationId}`) {
  const data = new TextEncoder().encode(JSON.stringify(p));
  const h = headers();
  for (const [k, v] of signer?.sign(subject, "", data) ?? []) h.set(k, v);
  return { subject, data, headers: h };
}

describe("batch progress is believed only from the source host's mover", () => {
  it("takes a report signed by the source host's mover", () => {
    expect(takeProgress(message(report(), moverA), trust, "a")).toEqual({ ok: true, progress: report() });
  });
  it("refuses another mover's report, unsigned ones, reports of another host and another migration's subject", () => {
    expect(takeProgress(message(report(), moverB), trust, "a")).toMatchObject({ ok: false, why: /mover-b may not/ });
    expect(takeProgress(message(report()), trust, "a")).toMatchObject({ ok: false, why: "unverified: unsigned" });
    expect(takeProgress(message(report({ host: "b" }), moverB), trust, "a")).toMatchObject({ ok: false });
    expect(takeProgress(message(report(), moverA, "dwcp.progress.m2"), trust, "a")).toMatchObject({ ok: false });
    expect(takeProgress(message(report(), moverA), trust, undefined)).toMatchObject({ ok: false });
  });
  it("an insecure reader takes any well-formed report for the source host, nothing malformed", () => {
    expect(takeProgress(message(report()), INSECURE, "a").ok).toBe(true);
    expect(takeProgress(message({ ...report(), bytes: -1 }), INSECURE, "a").ok).toBe(false);
  });
});
