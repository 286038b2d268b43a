import {
  COMMAND_TYPES,
  Command,
  echo,
  Id,
  truncateText,
  type CommandType,
  type RejectionReason,
} from "#schemas/index.js";

/** Longest rejection message: what the sender sent is echoed in pieces of at most MAX_ECHO_CHARS. */
export const MAX_REJECTION_MESSAGE_CHARS = 1024;
/** Issues listed in a rejection; the rest are counted. */
const MAX_ISSUES = 5;

export type ParsedCommand =
  | { ok: true; command: Command; aggregateId: string }
  | {
      ok: false;
      reason: RejectionReason;
      message: string;
      aggregateId?: string;
      commandId?: string;
      /** The command's type when it names a known one. */
      commandType?: CommandType;
    };

/**
 * Validates one raw command message. On failure it still names, when it can, the migration the
 * sender will be watching (its migrationId, else its commandId), so the rejection lands where the
 * sender looks; otherwise the shell files it under cmd-<stream sequence>.
 */
export function parseCommand(data: Uint8Array): ParsedCommand {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch (err) {
    const why = truncateText((err as Error).message);
    return { ok: false, reason: "INVALID_JSON", message: `command is not valid UTF-8 JSON: ${why}` };
  }
  const obj = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>) : {};
  const commandId = Id.safeParse(obj["commandId"]).data;
  const aggregateId = Id.safeParse(obj["migrationId"]).data ?? commandId;
  const where = { aggregateId, commandId };
  const type = obj["type"];
  if (typeof type !== "string" || !(COMMAND_TYPES as readonly string[]).includes(type)) {
    return {
      ok: false,
      reason: "UNKNOWN_COMMAND",
      message: `unknown command type ${echo(type)}; expected one of ${COMMAND_TYPES.join(", ")}`,
      ...where,
    };
  }
  const known = { ...where, commandType: type as CommandType };
  if (obj["version"] !== 1) {
    return {
      ok: false,
      reason: "UNSUPPORTED_VERSION",
      message: `${type} version ${echo(obj["version"])} is not supported; this coordinator speaks version 1`,
      ...known,
    };
  }
  const parsed = Command.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues;
    const paths = issues.map((i) => i.path.join("."));
    const reason: RejectionReason = paths.some((p) => p.endsWith("chunkSizeBytes"))
      ? "CHUNK_SIZE_INVALID"
      : paths.includes("source.volumes") && issues.some((i) => i.code === "too_small")
        ? "EMPTY_VOLUMES"
        : "SCHEMA_INVALID";
    const listed = issues
      .slice(0, MAX_ISSUES)
      .map((i) => `${truncateText(i.path.join("."), 100) || "(root)"}: ${truncateText(i.message)}`);
    if (issues.length > MAX_ISSUES) listed.push(`and ${issues.length - MAX_ISSUES} more`);
    const message = truncateText(listed.join("; "), MAX_REJECTION_MESSAGE_CHARS);
    return { ok: false, reason, message, ...known };
  }
  const command = parsed.data;
  const id = command.type === "StartMigration" ? (command.migrationId ?? command.commandId) : command.migrationId;
  return { ok: true, command, aggregateId: id };
}
