import { DwcpError } from "#common/errors.js";

/** A StartMigration reused the id of a migration that a different command started. */
export class MigrationIdInUseError extends DwcpError {
  readonly code = "MIGRATION_ID_IN_USE" as const;
  readonly retryable = false;
  constructor(readonly migrationId: string) {
    super(`migration id ${migrationId} is already used by another command; choose another id`);
  }
}

/** A command names a migration that has no events. */
export class UnknownMigrationError extends DwcpError {
  readonly code = "UNKNOWN_MIGRATION" as const;
  readonly retryable = false;
  constructor(readonly migrationId: string) {
    super(`no migration with id ${migrationId}`);
  }
}
