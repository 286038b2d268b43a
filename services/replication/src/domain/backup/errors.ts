import { DwcpError } from "#common/errors.js";
import { echo } from "./signature.js";

// Why restore-log refused a backup. Each is permanent and means nothing was written.

/** A version 1 (unsigned) backup, refused unless the operator passes --allow-unsigned. */
export class BackupUnsignedError extends DwcpError {
  readonly code = "BACKUP_UNSIGNED" as const;
  readonly retryable = false;
  constructor(readonly file: string) {
    super(
      `backup ${file} is not signed (format version 1); nothing was imported — take a signed backup with ` +
        "`dwcp backup --sign-key FILE`, or pass --allow-unsigned if you know where this file came from",
    );
  }
}

/** The signature does not verify against the trusted key: the file was altered after signing. */
export class BackupSignatureInvalidError extends DwcpError {
  readonly code = "BACKUP_SIGNATURE_INVALID" as const;
  readonly retryable = false;
  constructor(
    readonly file: string,
    readonly signer: string,
  ) {
    super(
      `backup ${file} has an invalid signature for ${signer}: it was altered after it was signed; nothing was ` +
        "imported — restore from an intact copy",
    );
  }
}

/** The file is signed, but not by the key restore-log was told to trust. */
export class BackupSignerUntrustedError extends DwcpError {
  readonly code = "BACKUP_SIGNER_UNTRUSTED" as const;
  readonly retryable = false;
  constructor(
    readonly file: string,
    readonly signer: string,
    readonly trusted: string,
  ) {
    super(
      `backup ${file} is signed by ${signer}, not by the trusted key ${trusted}; nothing was imported — pass ` +
        "--trust-key with the key that signed your backups (or --hmac-key with its secret)",
    );
  }
}

/** A key file that is neither an nkey seed nor a usable HMAC secret, or a malformed public key. */
export class BackupKeyInvalidError extends DwcpError {
  readonly code = "BACKUP_KEY_INVALID" as const;
  readonly retryable = false;
}

/** A stream that is not one of dwcp's own: restore-log never creates it. */
export class UnknownStreamInBackupError extends DwcpError {
  readonly code = "BACKUP_UNKNOWN_STREAM" as const;
  readonly retryable = false;
  constructor(
    readonly file: string,
    readonly stream: string,
  ) {
    super(
      `backup ${file} holds stream ${echo(stream)}, which is not one of dwcp's streams (DWCP_EVT, DWCP_CMD, ` +
        "DWCP_WORK_<host>); nothing was imported — restore-log imports only dwcp's own streams",
    );
  }
}

/** A message whose subject or payload is not what its stream holds. */
export class BackupPayloadInvalidError extends DwcpError {
  readonly code = "BACKUP_PAYLOAD_INVALID" as const;
  readonly retryable = false;
  constructor(
    readonly file: string,
    readonly stream: string,
    readonly seq: number,
    readonly detail: string,
  ) {
    super(
      `backup ${file}: ${stream} sequence ${seq} is invalid (${detail}); nothing was imported — ` +
        "the file holds data dwcp did not write; restore from another backup",
    );
  }
}
