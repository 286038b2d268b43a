// Writes docs/configuration.md from the settings table (services/common/settings.ts); with
// --check, exits 1 when the committed page is stale (npm run check runs it).
//   npx tsx scripts/config-docs.ts [--check]
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  CONFIG_FILE_NAME,
  CONFIG_VARIABLE,
  describeType,
  SETTINGS,
  type Setting,
} from "../services/common/settings.js";

const file = join(import.meta.dirname, "..", "docs", "configuration.md");

const cell = (text: string): string => text.replaceAll("|", "\\|");

function defaultOf(s: Setting): string {
  if (s.default !== undefined && s.type.kind === "switch") return `\`${s.default === "on"}\` (\`${s.default}\`)`;
  if (s.default !== undefined) return `\`${s.default}\``;
  return s.defaultText ?? "unset";
}

function page(): string {
  const out = [
    "<!-- Generated from services/common/settings.ts by scripts/config-docs.ts: run `npm run docs:config`. -->",
    "# Configuration",
    "",
    `Every dwcp process (the services and the CLI) reads the same settings from one file, \`${CONFIG_FILE_NAME}\`,`,
    "from the environment and from flags. A flag wins over the environment, which wins over the file;",
    "what none of them sets takes its default.",
    "",
    "## The file",
    "",
    `The file is \`--config FILE\` (every command takes it), else \`$${CONFIG_VARIABLE}\`, else`,
    `\`<data dir>/${CONFIG_FILE_NAME}\` if it exists, the data dir being \`--data-dir\`, else \`$DWCP_DATA_DIR\`,`,
    "else `.dwcp`. A file named by `--config` or the variable must exist. Processes an embedded stack",
    `(\`dwcp up\`) starts read the same file (\`$${CONFIG_VARIABLE}\` names it to them).`,
    "",
    "It is TOML: one table per section below, with the keys listed there. Numbers are TOML integers,",
    'switches `true`/`false` (or `"on"`/`"off"`), lists arrays of strings. An unknown section or key, or a',
    "value of the wrong type or out of bounds, stops the process before it starts anything: the CLI",
    "exits 2 and a service fails with a configuration error, each naming the file, the key and what",
    "was expected. A file holding `link.secret` must be readable by its owner only (mode 0600).",
    "",
    "```toml",
    "[nats]",
    'url = "nats://10.0.0.1:4222"',
    'nkey_file = "/etc/dwcp/creds/mover.nk"',
    "",
    "[tls]",
    'ca = "/etc/dwcp/pki/ca.pem"',
    'cert = "/etc/dwcp/pki/a.pem"',
    'key = "/etc/dwcp/pki/a.key"',
    "",
    "[host]",
    'id = "a"',
    "",
    "[mover]",
    'roots = ["/srv/vms"]',
    'listen = "0.0.0.0:7400"',
    "concurrency = 4",
    "",
    "[coordinator]",
    "max_attempts = 8",
    "```",
    "",
    "`dwcp config --print` shows every setting's effective value and where it came from (`default`,",
    "`file PATH`, `env VAR` or `flag --NAME`); `--json` prints the same for machines. Secrets, keys and",
    "token files are shown as set or unset, never their value.",
    "",
    "Empty environment variables count as unset. The CLI's `--connect-timeout DURATION` takes a",
    "duration (`30s`) where the file and the environment take milliseconds.",
    "",
    "## Settings",
  ];
  const sections = [...new Set(SETTINGS.map((s) => s.key.split(".")[0] ?? ""))];
  for (const section of sections) {
    out.push("", `### [${section}]`, "");
    out.push("| key | variable | flag | type | default | read by | what it sets |", "|---|---|---|---|---|---|---|");
    for (const s of (SETTINGS as readonly Setting[]).filter((x) => x.key.startsWith(`${section}.`))) {
      const name = s.key.slice(section.length + 1);
      const flag = s.flag !== undefined ? `\`--${s.flag}\`` : "";
      const help = `${cell(s.help)}${s.secret === true ? " (secret)" : ""}`;
      out.push(
        `| \`${name}\` | \`${s.env}\` | ${flag} | ${cell(describeType(s.type))} | ${cell(defaultOf(s))} | ` +
          `${s.readBy.join(", ")} | ${help} |`,
      );
    }
  }
  return `${out.join("\n")}\n`;
}

const text = page();
if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(file, "utf8");
  } catch {
    // missing: stale
  }
  if (current !== text) {
    process.stderr.write("docs/configuration.md is stale: run `npm run docs:config` and commit it\n");
    process.exit(1);
  }
} else writeFileSync(file, text);
