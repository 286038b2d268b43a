import { silentLogger, type Logger } from "#common/logger.js";

/** What a replication use case logs: by default nothing (the CLI prints its own summary). */
export interface LogOption {
  /** pino logger the caller wires in (the service's main, or the CLI); default silent. */
  logger?: Logger;
}

/**
 * The child logger of one replication action: `{svc: "replication", vm, snapshotId, host}`, each
 * only where known. Secrets never become bindings.
 */
export function replicationLogger(
  o: LogOption,
  bindings: { vm?: string; snapshotId?: string; host?: string; [key: string]: unknown } = {},
): Logger {
  const defined = Object.fromEntries(Object.entries(bindings).filter(([, v]) => v !== undefined));
  return (o.logger ?? silentLogger).child({ svc: "replication", ...defined });
}
