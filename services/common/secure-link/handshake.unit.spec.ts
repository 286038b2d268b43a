import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { deriveKey, NONCE_BYTES, newNonce, PROOF_BYTES, proofMatches, proofOf } from "./handshake.js";

describe("shared-key proof", () => {
  it("derives a key as HMAC-SHA256(secret, label)", () => {
    const expected = createHmac("sha256", "s3cret").update("replication").digest();
    expect(deriveKey("s3cret", "replication").equals(expected)).toBe(true);
    expect(deriveKey(Buffer.from("s3cret"), "replication").equals(expected)).toBe(true);
    expect(deriveKey("s3cret", "other").equals(expected)).toBe(false);
  });

  it("proves over the concatenation of its parts, strings as UTF-8", () => {
    const key = deriveKey("s3cret", "k");
    const nonce = Buffer.alloc(NONCE_BYTES, 7);
    const expected = createHmac("sha256", key)
      .update(Buffer.concat([Buffer.from("dwcp-repl-v1"), nonce, Buffer.from("hé")]))
      .digest();
    expect(proofOf(key, ["dwcp-repl-v1", nonce, "hé"]).equals(expected)).toBe(true);
    expect(expected.length).toBe(PROOF_BYTES);
  });

  it("matches only an equal proof of the right length", () => {
    const p = proofOf(deriveKey("s", "k"), [newNonce()]);
    expect(proofMatches(p, Buffer.from(p))).toBe(true);
    const flipped = Buffer.from(p);
    flipped[3] = (flipped[3] ?? 0) ^ 1;
    expect(proofMatches(p, flipped)).toBe(false);
    expect(proofMatches(p, p.subarray(0, 31))).toBe(false);
    expect(proofMatches(p.subarray(0, 31), p.subarray(0, 31))).toBe(false);
  });

  it("draws a fresh nonce each time", () => {
    const a = newNonce();
    expect(a.length).toBe(NONCE_BYTES);
    expect(a.equals(newNonce())).toBe(false);
  });
});
