// Help text made from the command table (commands.ts): `dwcp --help`, `dwcp <command> --help`,
// `dwcp help <command>`. Imports nothing else, so printing help loads no service.
import { COMMANDS, flagsOf, type CommandSpec, type FlagSpec } from "./commands.js";

/** `--name VALUE` or `-h, --help`. */
export const flagLabel = (f: FlagSpec): string =>
  `${f.short ? `-${f.short}, ` : ""}--${f.name}${f.value ? ` ${f.value}` : ""}`;

/** The flag's text with its default. */
export function flagText(f: FlagSpec): string {
  const dflt = f.default ?? f.defaultText;
  return `${f.help}${f.multiple ? "; repeatable" : ""}${dflt === undefined ? "" : ` (default: ${dflt})`}`;
}

function wrap(text: string, width: number, indent: string): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join(`\n${indent}`);
}

const COL = 32;

export function commandHelp(cmd: CommandSpec): string {
  const flagLines = flagsOf(cmd).map((f) => {
    const label = `  ${flagLabel(f)}`;
    const pad = label.length >= COL ? `\n${" ".repeat(COL)}` : " ".repeat(COL - label.length);
    return `${label}${pad}${wrap(flagText(f), 100 - COL, " ".repeat(COL))}`;
  });
  return [
    `usage: dwcp ${cmd.name} ${cmd.usage}`.trimEnd(),
    "",
    wrap(`${cmd.summary}.${cmd.description ? ` ${cmd.description}` : ""}`, 100, ""),
    "",
    "flags:",
    ...flagLines,
    "",
    cmd.examples.length === 1 ? "example:" : "examples:",
    ...cmd.examples.map((e) => `  ${e}`),
  ].join("\n");
}

export function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 4;
  return [
    "dwcp: move VM disk and memory images between hosts, recorded as events in NATS JetStream",
    "",
    "usage: dwcp <command> [flags]        dwcp <command> --help   dwcp help <command>   dwcp --version",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    "Commands that talk to NATS take --nats URL (default $DWCP_NATS_URL, else nats://127.0.0.1:4222) and",
    "authenticate with the stack's credentials: --data-dir DIR (default .dwcp, as for dwcp up), or --creds FILE",
    "--tls-ca FILE --tls-cert FILE --tls-key FILE, or DWCP_NKEY_FILE, DWCP_TLS_CA, DWCP_TLS_CERT, DWCP_TLS_KEY.",
    "Sizes are bytes with binary units (K, M, G = KiB, MiB, GiB). Exit codes: 0 done, 1 failed, 2 usage error.",
  ].join("\n");
}
