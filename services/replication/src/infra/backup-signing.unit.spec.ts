import { createUser } from "@nats-io/nkeys";
import { describe, expect, it } from "vitest";
import { BACKUP_FORMAT, BackupHeader, BackupTrailer, type BackupHeaderV2 } from "#schemas/replication.js";
import {
  BackupKeyInvalidError,
  BackupSignatureInvalidError,
  BackupSignerUntrustedError,
  BackupUnsignedError,
} from "../domain/backup/errors.js";
import { echo, signedStatement } from "../domain/backup/signature.js";
import {
  hmacSigningKey,
  signingKeyFromSeed,
  trustPublicKey,
  verifyBackupSignature,
  type BackupSigningKey,
  type BackupTrust,
} from "./backup-signing.js";

const seed = (): string => new TextDecoder().decode(createUser().getSeed());
const SHA = "ab".repeat(32);
const streams = [{ name: "DWCP_EVT", config: {}, firstSeq: 1, lastSeq: 3, messages: 3 }];

/** The header and trailer BackupWriter would write for `count` messages with digest `sha256`. */
function signed(key: BackupSigningKey, count = 3, sha256 = SHA): { header: BackupHeaderV2; trailer: BackupTrailer } {
  const header: BackupHeaderV2 = {
    format: BACKUP_FORMAT,
    version: 2,
    createdAt: "2026-12-05T00:00:00Z",
    streams,
    signer: key.signer,
  };
  const trailer = {
    trailer: true as const,
    count,
    sha256,
    signature: key.sign(signedStatement(key.signer, count, sha256)),
  };
  return { header, trailer };
}

describe("backup signatures", () => {
  const admin = signingKeyFromSeed(seed());
  const trust: BackupTrust = { alg: "ed25519", publicKey: admin.publicKey };

  it("the statement binds format, version, signer, count and digest", () => {
    const text = new TextDecoder().decode(signedStatement(admin.signer, 7, SHA));
    expect(text).toBe(`dwcp-log-backup\nversion 2\ned25519 ${admin.publicKey}\ncount 7\nsha256 ${SHA}\n`);
  });

  it("an ed25519 signature verifies against the trusted public key, and the header and trailer parse", () => {
    const { header, trailer } = signed(admin);
    expect(BackupHeader.parse(JSON.parse(JSON.stringify(header)))).toEqual(header);
    expect(BackupTrailer.parse(JSON.parse(JSON.stringify(trailer)))).toEqual(trailer);
    expect(Buffer.from(trailer.signature ?? "", "base64")).toHaveLength(64);
    expect(verifyBackupSignature("f", header, trailer, trust)).toBe("signed");
  });

  it("any change to the digest, the count or the signature is refused", () => {
    const { header, trailer } = signed(admin);
    const flipped = Buffer.from(trailer.signature ?? "", "base64");
    flipped[10] = (flipped[10] ?? 0) ^ 1;
    for (const t of [
      { ...trailer, sha256: "cd".repeat(32) },
      { ...trailer, count: 4 },
      { ...trailer, signature: flipped.toString("base64") },
      { ...trailer, signature: Buffer.alloc(63).toString("base64") },
    ])
      expect(() => verifyBackupSignature("f", header, t, trust)).toThrow(BackupSignatureInvalidError);
    const { signature: _s, ...none } = trailer;
    expect(() => verifyBackupSignature("f", header, none, trust)).toThrow(BackupSignatureInvalidError);
  });

  it("a file signed by another key, or naming another key, is not trusted", () => {
    const other = signingKeyFromSeed(seed());
    const { header, trailer } = signed(other);
    expect(() => verifyBackupSignature("f", header, trailer, trust)).toThrow(BackupSignerUntrustedError);
    // The admin's signature under a header that names the other key: the header is checked first.
    const mine = signed(admin);
    expect(() => verifyBackupSignature("f", { ...mine.header, signer: other.signer }, mine.trailer, trust)).toThrow(
      BackupSignerUntrustedError,
    );
    // The other key's signature under a header naming the admin: the signature fails.
    expect(() => verifyBackupSignature("f", mine.header, trailer, trust)).toThrow(BackupSignatureInvalidError);
  });

  it("HMAC-SHA256 verifies with the same secret only", () => {
    const secret = Buffer.alloc(32, 7);
    const { header, trailer } = signed(hmacSigningKey(secret));
    expect(header.signer.alg).toBe("hmac-sha256");
    expect(header.signer.alg === "hmac-sha256" && header.signer.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(verifyBackupSignature("f", header, trailer, { alg: "hmac-sha256", secret })).toBe("signed");
    expect(() =>
      verifyBackupSignature("f", header, trailer, { alg: "hmac-sha256", secret: Buffer.alloc(32, 8) }),
    ).toThrow(BackupSignerUntrustedError);
    expect(() => verifyBackupSignature("f", header, trailer, trust)).toThrow(BackupSignerUntrustedError);
    expect(() => hmacSigningKey(Buffer.alloc(31))).toThrow(BackupKeyInvalidError);
  });

  it("unsigned files are refused unless allowed; keys are checked", () => {
    const v1 = {
      format: BACKUP_FORMAT as typeof BACKUP_FORMAT,
      version: 1 as const,
      createdAt: "2026-12-05T00:00:00Z",
      streams,
    };
    const trailer = { trailer: true as const, count: 3, sha256: SHA };
    expect(() => verifyBackupSignature("f", v1, trailer, trust)).toThrow(BackupUnsignedError);
    expect(verifyBackupSignature("f", v1, trailer, trust, true)).toBe("unsigned");
    expect(() => signingKeyFromSeed("SUNOTASEED")).toThrow(BackupKeyInvalidError);
    expect(() => trustPublicKey("nope")).toThrow(BackupKeyInvalidError);
    expect(trustPublicKey(` ${admin.publicKey}\n`)).toEqual(trust);
    expect(() => verifyBackupSignature("f", signed(admin).header, signed(admin).trailer, undefined)).toThrow(
      BackupKeyInvalidError,
    );
  });

  it("echoes untrusted text quoted and capped", () => {
    expect(echo("EVIL\n")).toBe('"EVIL\\n"');
    expect(echo("x".repeat(10_000)).length).toBeLessThan(130);
  });
});
