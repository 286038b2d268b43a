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

/** A replication agent that did not open the store directory a sync names (too old, or refused it). */
export class AgentStoreError extends DwcpError {
  readonly code = "AGENT_STORE" as const;
  readonly retryable = false;
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

/**
 * A path a command names leaves its host's root: `..`, an absolute path elsewhere, a symlink to
 * outside, or (when opened beneath the root's held fd) any symlink met on the way. The message
 * carries the path as the command gave it, never the host path it resolved to (logs have that).
 */
export class PathOutsideRootError extends DwcpError {
  readonly code = "PATH_OUTSIDE_ROOT" as const;
  readonly retryable = false;
  constructor(
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${JSON.stringify(path.slice(0, 256))} ${reason}`, options);
  }
}

/** A path that must exist (a volume to replicate, a store to restore from) does not. */
export class PathNotFoundError extends DwcpError {
  readonly code = "PATH_NOT_FOUND" as const;
  readonly retryable = false;
  constructor(
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(`${JSON.stringify(path.slice(0, 256))} does not exist`, options);
  }
}

/** A host no mover registered and no replication service answers for: not one of this deployment's. */
export class UnknownHostError extends DwcpError {
  readonly code = "UNKNOWN_HOST" as const;
  readonly retryable = false;
  constructor(readonly host: string) {
    super(
      `host ${JSON.stringify(host.slice(0, 64))} is not known here: no mover is registered for it and no ` +
        "replication service answers for it; name a host of this deployment (one `dwcp up` started, or one " +
        "running a mover or a replication service)",
    );
  }
}

/** A path names something other than what the command needs (a directory for a volume file, say). */
export class PathKindError extends DwcpError {
  readonly code = "PATH_WRONG_KIND" as const;
  readonly retryable = false;
  constructor(
    readonly path: string,
    expected: "a regular file" | "a directory",
    options?: { cause?: unknown },
  ) {
    super(`${JSON.stringify(path.slice(0, 256))} is not ${expected}`, options);
  }
}
