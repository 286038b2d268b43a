import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { fromPublic, fromSeed } from "@nats-io/nkeys";
import { readTrustFile } from "#common/credentials/provision.js";
import { PublicNkey, type BackupHeader, type BackupSigner, type BackupTrailer } from "#schemas/replication.js";
import {
  BackupKeyInvalidError,
  BackupSignatureInvalidError,
  BackupSignerUntrustedError,
  BackupUnsignedError,
} from "../domain/backup/errors.js";
import { signedStatement, signerKey } from "../domain/backup/signature.js";

/** What signs a backup: the header names `signer`; `sign` returns the signature, base64. */
export interface BackupSigningKey {
  readonly signer: BackupSigner;
  sign(statement: Uint8Array): string;
}

/** The key restore-log checks a backup's signature against (never the key the file names). */
export type BackupTrust = { alg: "ed25519"; publicKey: string } | { alg: "hmac-sha256"; secret: Buffer };

/** HMAC secrets shorter than this are refused: 256 bits, SHA-256's own strength. */
export const MIN_HMAC_SECRET_BYTES = 32;

const SEED = /^S[A-Z2-7]{57}$/;

const hmacKeyId = (secret: Buffer): string =>
  createHash("sha256").update("dwcp-backup-hmac-key-id\n").update(secret).digest("hex").slice(0, 16);

/** An ed25519 signing key from an nkey seed (the format of the deployment's creds/<role>.nk). */
export function signingKeyFromSeed(seed: string): BackupSigningKey & { publicKey: string } {
  try {
    const kp = fromSeed(new TextEncoder().encode(seed.trim()));
    const publicKey = kp.getPublicKey();
    kp.sign(new Uint8Array(1)); // a curve (X) key cannot sign: find out now, not after the export
    return {
      publicKey,
      signer: { alg: "ed25519", publicKey },
      sign: (statement) => Buffer.from(kp.sign(statement)).toString("base64"),
    };
  } catch (err) {
    throw new BackupKeyInvalidError("the signing key is not an nkey seed that can sign (S..., 58 characters)", {
      cause: err,
    });
  }
}

/** An HMAC-SHA256 signing key from a shared secret of at least 32 bytes. */
export function hmacSigningKey(secret: Buffer): BackupSigningKey {
  if (secret.length < MIN_HMAC_SECRET_BYTES)
    throw new BackupKeyInvalidError(
      `an HMAC secret must be at least ${MIN_HMAC_SECRET_BYTES} bytes, got ${secret.length}: ` +
        "generate one with `head -c 32 /dev/urandom > FILE`",
    );
  const key = Buffer.from(secret);
  return {
    signer: { alg: "hmac-sha256", keyId: hmacKeyId(key) },
    sign: (statement) => createHmac("sha256", key).update(statement).digest("base64"),
  };
}

async function readKeyFile(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new BackupKeyInvalidError(`cannot read the key file ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The signing key in `file`: an nkey seed (one line, S...) signs with ed25519; any other content is
 * an HMAC-SHA256 secret (its bytes as they are, a final newline dropped).
 */
export async function loadSigningKey(file: string): Promise<BackupSigningKey> {
  const bytes = await readKeyFile(file);
  const text = bytes.toString("utf8").trim();
  return SEED.test(text) ? signingKeyFromSeed(text) : hmacSigningKey(withoutFinalNewline(bytes));
}

const withoutFinalNewline = (b: Buffer): Buffer => (b.at(-1) === 10 ? b.subarray(0, b.at(-2) === 13 ? -2 : -1) : b);

/** Trust a public nkey (U...). */
export function trustPublicKey(publicKey: string): BackupTrust {
  const pk = publicKey.trim();
  if (!PublicNkey.safeParse(pk).success)
    throw new BackupKeyInvalidError(`--trust-key must be a public nkey (56 characters, U...), got ${pk.slice(0, 60)}`);
  return { alg: "ed25519", publicKey: pk };
}

/** Trust the HMAC secret in `file` (the one the backups were signed with). */
export async function trustHmacFile(file: string): Promise<BackupTrust> {
  const secret = withoutFinalNewline(await readKeyFile(file));
  if (SEED.test(secret.toString("utf8").trim()))
    throw new BackupKeyInvalidError(`${file} holds an nkey seed: pass its public key with --trust-key instead`);
  hmacSigningKey(secret); // length check
  return { alg: "hmac-sha256", secret: Buffer.from(secret) };
}

/** Trust the admin key named in a deployment's trust.json. */
export function trustFromTrustFile(file: string): BackupTrust {
  const trust = readTrustFile(file);
  const admins = Object.entries(trust.principals).filter(([, p]) => p.role === "admin");
  const admin = admins[0];
  if (admin === undefined || admins.length > 1)
    throw new BackupKeyInvalidError(
      `${file} must name exactly one admin key, found ${admins.length}: pass --trust-key PUBLIC_NKEY instead`,
    );
  return { alg: "ed25519", publicKey: admin[0] };
}

const describeTrust = (t: BackupTrust): string =>
  t.alg === "ed25519" ? t.publicKey : `the HMAC secret ${hmacKeyId(t.secret)}`;

/**
 * Checks a verified scan's header and trailer against the trusted key; throws unless the file is
 * signed by that key. A version 1 file is refused unless `allowUnsigned` (returns "unsigned").
 */
export function verifyBackupSignature(
  file: string,
  header: BackupHeader,
  trailer: BackupTrailer,
  trust: BackupTrust | undefined,
  allowUnsigned = false,
): "signed" | "unsigned" {
  if (header.version === 1) {
    if (allowUnsigned) return "unsigned";
    throw new BackupUnsignedError(file);
  }
  const signer = header.signer;
  const named = signer.alg === "ed25519" ? signer.publicKey : `the HMAC secret ${signer.keyId}`;
  if (trust === undefined)
    throw new BackupKeyInvalidError(`no trusted key to check backup ${file} (signed by ${named}) against`);
  const trustedKey = trust.alg === "ed25519" ? trust.publicKey : hmacKeyId(trust.secret);
  if (signer.alg !== trust.alg || signerKey(signer) !== trustedKey)
    throw new BackupSignerUntrustedError(file, named, describeTrust(trust));
  const sig = Buffer.from(trailer.signature ?? "", "base64");
  const statement = signedStatement(signer, trailer.count, trailer.sha256);
  const ok =
    trust.alg === "ed25519"
      ? sig.length === 64 && verifyEd25519(trust.publicKey, statement, sig)
      : sig.length === 32 && timingSafeEqual(sig, createHmac("sha256", trust.secret).update(statement).digest());
  if (!ok) throw new BackupSignatureInvalidError(file, named);
  return "signed";
}

function verifyEd25519(publicKey: string, statement: Uint8Array, sig: Uint8Array): boolean {
  try {
    return fromPublic(publicKey).verify(statement, sig);
  } catch {
    return false;
  }
}
