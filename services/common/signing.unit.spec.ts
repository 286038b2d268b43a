import { createUser } from "@nats-io/nkeys";
import { headers } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { EventSigner, EventVerifier, PRINCIPAL_HEADER, SIGNATURE_HEADER, signedBytes } from "./signing.js";

const enc = new TextEncoder();
const payload = enc.encode('{"type":"MigrationCompleted"}');

function setup() {
  const coordinator = new EventSigner(createUser());
  const mover = new EventSigner(createUser());
  const stranger = new EventSigner(createUser());
  const verifier = new EventVerifier({
    version: 1,
    principals: {
      [coordinator.publicKey]: { role: "coordinator" },
      [mover.publicKey]: { role: "mover-a", host: "a" },
    },
  });
  return { coordinator, mover, stranger, verifier };
}

const asHeaders = (pairs: Array<[string, string]>, msgID?: string) => {
  const h = headers();
  for (const [k, v] of pairs) h.set(k, v);
  if (msgID !== undefined) h.set("Nats-Msg-Id", msgID);
  return h;
};

describe("event signatures", () => {
  it("binds the subject, the msgID and a digest of the payload, in a versioned context", () => {
    const text = new TextDecoder().decode(signedBytes("dwcp.evt.migration.m1", "m1.plan", payload));
    expect(text).toMatch(/^dwcp-evt-v1\ndwcp\.evt\.migration\.m1\nm1\.plan\n[0-9a-f]{64}$/);
  });

  it("given a signed event, when read back unchanged, then its principal is the signer's role and host", () => {
    const { mover, verifier } = setup();
    const h = asHeaders(mover.sign("dwcp.evt.migration.m1", "id1", payload), "id1");
    expect(verifier.verify("dwcp.evt.migration.m1", h, payload)).toEqual({
      kind: "signed",
      principal: { key: mover.publicKey, role: "mover-a", host: "a" },
    });
  });

  it("given a signed event, when its subject, msgID or payload changed, then the signature is bad", () => {
    const { coordinator, verifier } = setup();
    const sig = coordinator.sign("dwcp.evt.migration.m1", "id1", payload);
    const bad = { kind: "unverified", reason: "bad signature" };
    expect(verifier.verify("dwcp.evt.migration.m2", asHeaders(sig, "id1"), payload)).toEqual(bad);
    expect(verifier.verify("dwcp.evt.migration.m1", asHeaders(sig, "id2"), payload)).toEqual(bad);
    expect(verifier.verify("dwcp.evt.migration.m1", asHeaders(sig, "id1"), enc.encode("{}"))).toEqual(bad);
  });

  it("makes the signatures of the nkey library from the same seed, and takes its signatures", () => {
    const kp = createUser();
    const signer = new EventSigner(kp);
    const verifier = new EventVerifier({ version: 1, principals: { [signer.publicKey]: { role: "coordinator" } } });
    for (const body of [payload, enc.encode(""), enc.encode("x".repeat(10_000))]) {
      const bytes = signedBytes("dwcp.evt.migration.m1", "id1", body);
      const ours = signer.sign("dwcp.evt.migration.m1", "id1", body);
      expect(ours[1]?.[1]).toBe(Buffer.from(kp.sign(bytes)).toString("base64url"));
      const theirs: Array<[string, string]> = [
        [PRINCIPAL_HEADER, signer.publicKey],
        [SIGNATURE_HEADER, Buffer.from(kp.sign(bytes)).toString("base64url")],
      ];
      expect(verifier.verify("dwcp.evt.migration.m1", asHeaders(theirs, "id1"), body).kind).toBe("signed");
      expect(signer.signed("dwcp.evt.migration.m1", "id1", asHeaders(theirs, "id1"), body)).toBe(true);
    }
  });

  it("given a restored backup, when the msgID is only in Dwcp-Orig-Msg-Id, then the signature still holds", () => {
    const { coordinator, verifier } = setup();
    const h = asHeaders([...coordinator.sign("s", "id1", payload), ["Dwcp-Orig-Msg-Id", "id1"]]);
    expect(verifier.verify("s", h, payload).kind).toBe("signed");
  });

  it("refuses unsigned events, unknown keys and a trusted key named over another's signature", () => {
    const { coordinator, stranger, verifier } = setup();
    expect(verifier.verify("s", asHeaders([], "id"), payload)).toEqual({ kind: "unverified", reason: "unsigned" });
    expect(verifier.verify("s", undefined, payload)).toEqual({ kind: "unverified", reason: "unsigned" });
    const foreign = asHeaders(stranger.sign("s", "id", payload), "id");
    expect(verifier.verify("s", foreign, payload)).toEqual({ kind: "unverified", reason: "unknown signer" });
    foreign.set(PRINCIPAL_HEADER, coordinator.publicKey);
    expect(verifier.verify("s", foreign, payload)).toEqual({ kind: "unverified", reason: "bad signature" });
    foreign.set(SIGNATURE_HEADER, "!!not base64!!");
    expect(verifier.verify("s", foreign, payload)).toEqual({ kind: "unverified", reason: "bad signature" });
  });

  it("takes its own signer's and already checked signatures as known, and nothing altered or moved", () => {
    const { coordinator, mover, verifier } = setup();
    coordinator.known = verifier.known;
    const own = coordinator.sign("dwcp.evt.migration.m1", "id1", payload);
    expect(
      verifier.known.has(
        coordinator.publicKey,
        own[1]?.[1] ?? "",
        signedBytes("dwcp.evt.migration.m1", "id1", payload),
      ),
    ).toBe(true);
    expect(verifier.verify("dwcp.evt.migration.m1", asHeaders(own, "id1"), payload)).toEqual({
      kind: "signed",
      principal: { key: coordinator.publicKey, role: "coordinator" },
    });
    // The known signature proves only its own subject, msgID and payload, under its own key.
    const bad = { kind: "unverified", reason: "bad signature" };
    expect(verifier.verify("dwcp.evt.migration.m2", asHeaders(own, "id1"), payload)).toEqual(bad);
    expect(verifier.verify("dwcp.evt.migration.m1", asHeaders(own, "id1"), enc.encode("{}"))).toEqual(bad);
    const moved = asHeaders(own, "id1");
    moved.set(PRINCIPAL_HEADER, mover.publicKey);
    expect(verifier.verify("dwcp.evt.migration.m1", moved, payload)).toEqual(bad);
    // A checked signature is remembered; a bad one never is.
    const theirs = mover.sign("dwcp.evt.migration.m1", "id2", payload);
    const bytes = signedBytes("dwcp.evt.migration.m1", "id2", payload);
    expect(verifier.known.has(mover.publicKey, theirs[1]?.[1] ?? "", bytes)).toBe(false);
    expect(verifier.verify("dwcp.evt.migration.m1", asHeaders(theirs, "id2"), payload).kind).toBe("signed");
    expect(verifier.known.has(mover.publicKey, theirs[1]?.[1] ?? "", bytes)).toBe(true);
    expect(verifier.known.has(coordinator.publicKey, theirs[1]?.[1] ?? "", bytes)).toBe(false);
  });

  it("derives msgIDs that are stable per key and base, and differ between keys", () => {
    const { coordinator, mover } = setup();
    expect(coordinator.msgId("m1.plan")).toBe(coordinator.msgId("m1.plan"));
    expect(coordinator.msgId("m1.plan")).toMatch(/^m1\.plan\.k[\w-]{16}$/);
    expect(coordinator.msgId("m1.plan")).not.toBe(mover.msgId("m1.plan"));
    expect(coordinator.msgId("m1.plan")).not.toBe(coordinator.msgId("m1.finalize"));
  });

  it("recognises its own signed copy and nobody else's", () => {
    const { coordinator, mover } = setup();
    const h = asHeaders(coordinator.sign("s", "id", payload), "id");
    expect(coordinator.signed("s", "id", h, payload)).toBe(true);
    expect(mover.signed("s", "id", h, payload)).toBe(false);
    expect(coordinator.signed("other", "id", h, payload)).toBe(false);
  });
});
