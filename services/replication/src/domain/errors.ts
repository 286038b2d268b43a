import { DwcpError } from "#common/errors.js";

/** A backup file that is truncated, corrupted or not a dwcp backup. Nothing was imported. */
export class BackupCorruptError extends DwcpError {
  readonly code = "BACKUP_CORRUPT" as const;
  readonly retryable = false;
  constructor(
    readonly file: string,
    readonly line: number,
    readonly detail: string,
  ) {
    super(
      `backup ${file} is unusable (line ${line}: ${detail}); ` +
        "nothing was imported — take a new backup with `dwcp backup`",
    );
  }
}

/** restore-log only writes into an empty or absent stream. */
export class RestoreTargetNotEmptyError extends DwcpError {
  readonly code = "RESTORE_TARGET_NOT_EMPTY" as const;
  readonly retryable = false;
  constructor(
    readonly stream: string,
    readonly messages: number,
  ) {
    super(
      `stream ${stream} already holds ${messages} message(s); ` +
        "restore-log only imports into an empty or absent stream — use a fresh server or delete the stream first",
    );
  }
}

/** Somebody else wrote to the stream while restore-log was importing. */
export class RestoreInterferenceError extends DwcpError {
  readonly code = "RESTORE_INTERFERENCE" as const;
  readonly retryable = false;
  constructor(
    readonly stream: string,
    readonly seq: number,
    options?: { cause?: unknown },
  ) {
    super(
      `stream ${stream} changed during restore-log at sequence ${seq}: ` +
        "stop every coordinator and mover on the target server and restore into an empty stream",
      options,
    );
  }
}

/** A manifest or chunk in the destination store does not match its recorded hash. */
export class StoreIntegrityError extends DwcpError {
  readonly code = "STORE_INTEGRITY" as const;
  readonly retryable = false;
  constructor(
    readonly what: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      `${what}: expected BLAKE3 ${expected}, found ${actual}; the store is damaged — restore from another snapshot`,
    );
  }
}

/** No snapshot matches what was asked for. */
export class SnapshotNotFoundError extends DwcpError {
  readonly code = "SNAPSHOT_NOT_FOUND" as const;
  readonly retryable = false;
  constructor(
    readonly vm: string,
    readonly wanted: string,
  ) {
    super(`no committed snapshot of ${vm} ${wanted}; list them with \`dwcp snapshots --vm ${vm}\``);
  }
}

/** A request from a source that the destination agent cannot use as sent. */
export class FrameInvalidError extends DwcpError {
  readonly code = "FRAME_INVALID" as const;
  readonly retryable = false;
}

/** A whole chunk arrived with bytes that do not hash to its name. */
export class ChunkChecksumError extends DwcpError {
  readonly code = "CHECKSUM_MISMATCH" as const;
  readonly retryable = true;
  constructor(
    readonly chunk: string,
    readonly actual: string,
  ) {
    super(`chunk ${chunk} arrived as ${actual}; the source re-reads and resends it on the next sync`);
  }
}
