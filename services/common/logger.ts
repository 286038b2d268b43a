import { pino, type Logger } from "pino";

import { processSetting } from "./config.js";

export type { Logger };

/** Logs nothing: the default where a caller (a test, the CLI printing for people) passes no logger. */
export const silentLogger: Logger = pino({ level: "silent" });

/**
 * pino JSON logs on stdout (or a file descriptor the embedded stack hands us). Child loggers add
 * {migrationId, batch, offset, host}. Secrets never reach a log line: the redact list is the
 * last line of defence, not the first.
 */
export function createLogger(svc: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    name: "dwcp",
    level: processSetting("logLevel"),
    base: { svc, pid: process.pid, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ["secret", "*.secret", "token", "*.token", "mac"], censor: "[redacted]" },
  });
}
