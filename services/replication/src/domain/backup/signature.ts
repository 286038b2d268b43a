import { BACKUP_FORMAT, type BackupSigner } from "#schemas/replication.js";

/** The version whose files carry a signature (version 1 files are unsigned). */
export const SIGNED_VERSION = 2;

const encoder = new TextEncoder();

/** The signer's key as the header names it: a public nkey, or the id of an HMAC secret. */
export const signerKey = (s: BackupSigner): string => (s.alg === "ed25519" ? s.publicKey : s.keyId);

/**
 * The bytes a backup's signature covers: the format and version, the signer, and the trailer's
 * count and SHA-256. That digest runs over every line before the trailer, the header included,
 * so the signature binds the streams, their sequences and configurations, every message and the
 * signer's key; a signature cannot be moved to another file or version, or claimed by another key.
 */
export function signedStatement(signer: BackupSigner, count: number, sha256: string): Uint8Array {
  return encoder.encode(
    `${BACKUP_FORMAT}\nversion ${SIGNED_VERSION}\n${signer.alg} ${signerKey(signer)}\n` +
      `count ${count}\nsha256 ${sha256}\n`,
  );
}

/** At most this much of anything read from a backup is echoed in an error message. */
export const ECHO_CHARS = 120;

/** Untrusted text for an error message: JSON-quoted (no control characters) and capped. */
export function echo(text: string): string {
  return JSON.stringify(text.length > ECHO_CHARS ? `${text.slice(0, ECHO_CHARS)}…` : text);
}
