import { DwcpError } from "#common/errors.js";

/**
 * A snapshot was computed against a parent that is no longer the VM's latest snapshot: another
 * sync committed first. Nothing was recorded; the next sync computes against the new latest.
 */
export class SnapshotParentMovedError extends DwcpError {
  readonly code = "SNAPSHOT_PARENT_MOVED" as const;
  readonly retryable = true;
  constructor(
    readonly vm: string,
    readonly snapshotId: string,
    readonly parentId: string | undefined,
    readonly latestId: string | undefined,
  ) {
    super(
      `snapshot ${snapshotId} of ${vm} was computed against ${parentId ?? "no snapshot"}, ` +
        `but the latest is now ${latestId ?? "none"}; sync again`,
    );
  }
}
