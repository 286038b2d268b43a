// The man page man/dwcp.1 (roff), made from the command table; scripts/man.ts writes and checks it.
import { COMMANDS, flagsOf } from "./commands.js";
import { flagLabel, flagText } from "./help.js";

/** roff-escapes text: backslashes, and a leading dot or quote that would read as a request. */
const esc = (s: string): string =>
  s
    .replaceAll("\\", "\\e")
    .replaceAll("-", "\\-")
    .replace(/^([.'])/gm, "\\&$1");

export function manPage(version: string): string {
  const out = [
    `.TH DWCP 1 "" "dwcp ${version}" "User Commands"`,
    ".SH NAME",
    "dwcp \\- move VM disk and memory images between hosts, recorded as events in NATS JetStream",
    ".SH SYNOPSIS",
    ".B dwcp",
    ".I command",
    "[\\fIflags\\fR]",
    ".br",
    ".B dwcp help",
    ".I command",
    ".SH DESCRIPTION",
    esc(
      "dwcp migrates and replicates VM images between hosts; every command and outcome is an event in NATS " +
        "JetStream. Every command takes --help, which prints its usage and does nothing else. Sizes are bytes " +
        "with binary units (K, M, G = KiB, MiB, GiB); durations take ms, s, m, h or d.",
    ),
    ".SH EXIT STATUS",
    "0 done; 1 failed; 2 usage error (nothing was done).",
    ".SH COMMANDS",
  ];
  for (const c of COMMANDS) {
    out.push(".SS", `\\fBdwcp ${esc(c.name)}\\fR ${esc(c.usage)}`);
    out.push(esc(`${c.summary}.${c.description ? ` ${c.description}` : ""}`));
    for (const f of flagsOf(c)) out.push(".TP", `.B ${esc(flagLabel(f))}`, esc(flagText(f)));
    out.push(".PP", "Example:");
    for (const e of c.examples) out.push(".RS", ".nf", esc(e), ".fi", ".RE");
  }
  out.push(
    ".SH ENVIRONMENT",
    esc(
      "Every setting's dwcp.toml key, DWCP_* variable and flag are listed in docs/configuration.md; " +
        "a flag wins over the variable, which wins over the file. The most used:",
    ),
    ".TP",
    ".B DWCP_CONFIG",
    esc("the dwcp.toml to read (like --config; default DIR/dwcp.toml of the data dir if it exists)"),
    ".TP",
    ".B DWCP_NATS_URL",
    esc("the NATS server(s), comma-separated (default nats://127.0.0.1:4222)"),
    ".TP",
    ".B DWCP_CONNECT_TIMEOUT_MS",
    esc("how long a command tries to reach NATS (default 5000)"),
    ".TP",
    ".B DWCP_DATA_DIR",
    esc("the stack's data dir the CLI reads credentials and the trust file from (default .dwcp)"),
    ".SH SEE ALSO",
    "nats\\-server(8)",
  );
  return `${out.join("\n")}\n`;
}
