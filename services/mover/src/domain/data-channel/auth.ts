import { deriveKey, NONCE_BYTES, proofMatches, proofOf } from "#common/secure-link/handshake.js";

/**
 * Data-channel authentication, on the shared-key proof of #common/secure-link. Both movers hold
 * the cluster secret; neither ever sends it or the per-migration token. The server sends a fresh
 * 32-byte nonce (CHALLENGE); the client answers with a MAC over that nonce keyed by the
 * migration's token (HELLO). A captured HELLO is useless on any other connection, and a token
 * leaked for one migration opens no other. Between batches a connection may authenticate again,
 * for another migration (see helloNonce): it then carries that migration's batches only.
 */
const TOKEN_LABEL = "dwcp/v1/migration/";

/** token = HMAC-SHA256(clusterSecret, "dwcp/v1/migration/" + migrationId) */
export function migrationToken(clusterSecret: Uint8Array, migrationId: string): Buffer {
  return deriveKey(clusterSecret, TOKEN_LABEL + migrationId);
}

/** mac = HMAC-SHA256(token, serverNonce || migrationId || sourceHost) */
export function helloMac(token: Uint8Array, nonce: Uint8Array, migrationId: string, sourceHost: string): Buffer {
  return proofOf(token, [nonce, migrationId, sourceHost]);
}

/**
 * The nonce the `n`th HELLO on one connection answers: the CHALLENGE's own nonce for the first
 * (n = 0), then HMAC-SHA256(nonce, "dwcp/v1/rehello/" + n). A kept link re-authenticates for
 * another migration with the next n, so each HELLO on a connection answers a challenge of its
 * own without another CHALLENGE round trip, and none can be replayed on it or anywhere else.
 */
export function helloNonce(challenge: Uint8Array, n: number): Uint8Array {
  return n === 0 ? challenge : proofOf(challenge, [`${REHELLO_LABEL}${n}`]);
}
const REHELLO_LABEL = "dwcp/v1/rehello/";

/** Recompute the client's MAC and compare in constant time. */
export function verifyHelloMac(
  clusterSecret: Uint8Array,
  nonce: Uint8Array,
  hello: { migrationId: string; sourceHost: string; mac: Uint8Array },
): boolean {
  if (nonce.length !== NONCE_BYTES) return false;
  const expected = helloMac(
    migrationToken(clusterSecret, hello.migrationId),
    nonce,
    hello.migrationId,
    hello.sourceHost,
  );
  return proofMatches(expected, hello.mac);
}
