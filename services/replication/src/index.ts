// The replication service's front door: what the CLI and other services may use. The source side
// runs as a service (startReplicationService / runReplicationService) that takes commands over
// NATS (requestReplication); the destination side is the agent (runReplicationAgent). Log tools
// that only read the log or a backup (replay, backup, restore-log, snapshots), restore from a
// store and the DR drill are library calls.
export { runReplicationAgent, runReplicationService, startReplicationService } from "./main.js";
export type { ReplicationServiceHandle } from "./main.js";
export type { ServiceFlags } from "./service-config.js";
export { observeSync, observeSyncFailed } from "./app/sync-metrics.js";
export {
  pingReplication,
  replicateVm,
  requestReplication,
  restoreVm,
  replicationRpc,
  ReplicationCommandError,
  ReplicationServiceLostError,
  ReplicationServiceUnavailableError,
  type ReplicationPong,
  type ReplicationRestored,
  type ReplicationSynced,
  type RequestOptions,
} from "./infra/commands.js";
export { isKnownHost } from "./infra/known-hosts.js";
export { readReplication, readReplicationChecked, type IgnoredEvent } from "./app/snapshots.js";
export { backup, type BackupSummary } from "./app/backup.js";
export { restoreLog, type RestoreLogSummary } from "./app/restore-log.js";
export {
  loadSigningKey,
  signingKeyFromSeed,
  trustFromTrustFile,
  trustHmacFile,
  trustPublicKey,
  type BackupSigningKey,
  type BackupTrust,
} from "./infra/backup-signing.js";
export {
  BackupKeyInvalidError,
  BackupPayloadInvalidError,
  BackupSignatureInvalidError,
  BackupSignerUntrustedError,
  BackupUnsignedError,
  UnknownStreamInBackupError,
} from "./domain/backup/errors.js";
export { signKeyFile, trustFileOf, type BackupKeyFlags } from "./backup-config.js";
export { replay, replayBackup, type ReplayOptions, type ReplayTrust } from "./app/replay.js";
export { pickSnapshot, restoreFromStore, type RestoreResult } from "./app/restore.js";
export { formatReplay, type ReplayView } from "./domain/replay/view.js";
export type { Replication, Snapshot } from "./domain/replication/state.js";
export { runDrill, type DrillReport } from "./app/drill.js";
