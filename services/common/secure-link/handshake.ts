import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * The shared-key proof both dwcp links use (the mover data channel and the replication link):
 * the accepting side sends a fresh random nonce, the dialling side answers with an HMAC-SHA256
 * over that nonce (and whatever context the protocol binds in) keyed by a key derived from the
 * cluster secret. Neither the secret nor the derived key ever travels; a captured answer is
 * useless on any other connection. Pure apart from newNonce(): no sockets, no clock.
 */
export const NONCE_BYTES = 32;
/** Bytes of an HMAC-SHA256 proof. */
export const PROOF_BYTES = 32;

/** A fresh challenge for one connection. */
export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/** key = HMAC-SHA256(secret, label): one key per purpose, so a key leaked for one opens no other. */
export function deriveKey(secret: Uint8Array | string, label: string): Buffer {
  return createHmac("sha256", secret).update(label, "utf8").digest();
}

/** proof = HMAC-SHA256(key, parts[0] || parts[1] || ...), strings as UTF-8. */
export function proofOf(key: Uint8Array, parts: readonly (Uint8Array | string)[]): Buffer {
  const mac = createHmac("sha256", key);
  for (const p of parts) {
    if (typeof p === "string") mac.update(p, "utf8");
    else mac.update(p);
  }
  return mac.digest();
}

/** Constant-time comparison of an expected proof with the one received (false on a length mismatch). */
export function proofMatches(expected: Uint8Array, received: Uint8Array): boolean {
  return expected.length === PROOF_BYTES && received.length === PROOF_BYTES && timingSafeEqual(expected, received);
}
