// dwcp.toml: the settings of settings.ts in one file, under the environment and the flags.
// Found by `--config FILE`, else $DWCP_CONFIG, else <data dir>/dwcp.toml if it exists; validated
// whole (unknown keys and wrong types are errors naming the file and key) and then layered
// into the process's environment under the variables already set, so that every loader and
// every deep reader (processSetting) sees it without knowing about files.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse, TomlError } from "smol-toml";
import { z } from "zod";
import { ConfigError } from "./errors.js";
import {
  CONFIG_FILE_NAME,
  CONFIG_VARIABLE,
  describeType,
  SETTINGS,
  type Setting,
  type SettingType,
} from "./settings.js";

/** A config file, validated: each value as the environment would hold it, by variable. */
export interface ConfigFile {
  path: string;
  values: Readonly<Record<string, string>>;
}

type Env = Record<string, string | undefined>;

/** The largest config file read: a file of every setting is a few KiB. */
const MAX_FILE_BYTES = 256 * 1024;

function fieldSchema(type: SettingType): z.ZodType {
  switch (type.kind) {
    case "int": {
      const n = z.number().int().min(type.min).max(type.max);
      const oneOf = type.oneOf;
      return oneOf ? n.refine((v) => oneOf.includes(v)) : n;
    }
    case "switch":
      return z.union([z.boolean(), z.enum(["on", "off"])]);
    case "enum":
      return z.enum(type.values as [string, ...string[]]);
    case "text":
      return z.string().min(1).max(type.max);
    case "list":
      return z.array(z.string().min(1).max(4096)).min(1).max(type.max);
    default: {
      const never: never = type;
      return never;
    }
  }
}

const sections = new Map<string, Map<string, Setting>>();
for (const s of SETTINGS as readonly Setting[]) {
  const [section = "", name = ""] = s.key.split(".");
  const fields = sections.get(section) ?? new Map<string, Setting>();
  fields.set(name, s);
  sections.set(section, fields);
}

/** The file's schema: the declared sections and keys only, each of its declared type and bounds. */
const FileSchema = z.strictObject(
  Object.fromEntries(
    [...sections].map(([section, fields]) => {
      const keys = Object.fromEntries([...fields].map(([name, s]) => [name, fieldSchema(s.type).optional()]));
      return [section, z.strictObject(keys).optional()];
    }),
  ),
);

/** The environment's text for a file value already checked against its type. */
function asEnvText(type: SettingType, value: unknown): string {
  if (type.kind === "switch") return value === true || value === "on" ? "on" : "off";
  if (type.kind === "list") return (value as string[]).join(",");
  return String(value);
}

const preview = (v: unknown): string => {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
};

/** One problem per bad key, naming the key and what was expected. */
function problemsOf(path: string, doc: Record<string, unknown>, issues: readonly z.core.$ZodIssue[]): string[] {
  const out = new Set<string>();
  for (const i of issues) {
    const [section, name] = i.path.map(String);
    if (i.code === "unrecognized_keys") {
      for (const k of i.keys) {
        if (section === undefined)
          out.add(`${path}: unknown section [${k}] (known: ${[...sections.keys()].join(", ")})`);
        else {
          const known = [...(sections.get(section)?.keys() ?? [])].join(", ");
          out.add(`${path}: unknown key ${section}.${k} (known in [${section}]: ${known})`);
        }
      }
      continue;
    }
    if (section !== undefined && name === undefined) {
      out.add(`${path}: [${section}] must be a table of settings, got ${preview(doc[section])}`);
      continue;
    }
    const s = sections.get(section ?? "")?.get(name ?? "");
    const given = (doc[section ?? ""] as Record<string, unknown> | undefined)?.[name ?? ""];
    out.add(
      s === undefined
        ? `${path}: ${i.path.join(".")}: ${i.message}`
        : `${path}: ${s.key}: expected ${describeType(s.type)}, got ${preview(given)}`,
    );
  }
  return [...out];
}

/**
 * Reads and validates a config file: its values by variable. A ConfigError names the file and
 * every bad key; a file holding a secret must be readable by its owner only.
 */
export function readConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    if (statSync(path).size > MAX_FILE_BYTES)
      throw new ConfigError([`${path}: larger than ${MAX_FILE_BYTES} bytes; is this the config file?`]);
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError([`${path}: cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parse(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    const first = err.message.split("\n")[0] ?? "";
    throw new ConfigError([`${path}: not valid TOML at line ${err.line}, column ${err.column}: ${first}`]);
  }
  const parsed = FileSchema.safeParse(doc);
  if (!parsed.success) throw new ConfigError(problemsOf(path, doc, parsed.error.issues));
  const values: Record<string, string> = {};
  const secrets: string[] = [];
  for (const [section, fields] of Object.entries(parsed.data as Record<string, Record<string, unknown> | undefined>))
    for (const [name, value] of Object.entries(fields ?? {})) {
      const s = sections.get(section)?.get(name);
      if (s === undefined || value === undefined) continue;
      values[s.env] = asEnvText(s.type, value);
      if (s.secret === true && s.key === "link.secret") secrets.push(s.key);
    }
  if (secrets.length > 0) {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0)
      throw new ConfigError([
        `${path} holds ${secrets.join(", ")} but others may read it (mode ${mode.toString(8).padStart(4, "0")}): ` +
          `chmod 600 ${path}, or set DWCP_SECRET in the environment instead`,
      ]);
  }
  return { path: resolve(path), values: Object.freeze(values) };
}

/**
 * Which config file applies: `flag` (--config), else $DWCP_CONFIG, else <data dir>/dwcp.toml if
 * it exists (the data dir from --data-dir, else $DWCP_DATA_DIR, else .dwcp). A file named by
 * --config or $DWCP_CONFIG must exist.
 */
export function findConfigFile(o: {
  flag?: string | undefined;
  env: Env;
  dataDir?: string | undefined;
}): string | undefined {
  const named = o.flag ?? (o.env[CONFIG_VARIABLE] || undefined);
  if (named !== undefined) {
    if (!existsSync(named))
      throw new ConfigError([
        `${o.flag !== undefined ? "--config" : CONFIG_VARIABLE} ${named} does not exist: ` +
          "give the path of a dwcp.toml, or leave it out to run without one",
      ]);
    return named;
  }
  const inDataDir = join(o.dataDir ?? (o.env["DWCP_DATA_DIR"] || ".dwcp"), CONFIG_FILE_NAME);
  return existsSync(inDataDir) ? inDataDir : undefined;
}

/** `env` with the file's values for the variables it leaves unset (or empty): file < environment. */
export function withConfigFile(env: Env, file: ConfigFile | undefined): Env {
  if (file === undefined) return env;
  const out: Env = { ...env };
  for (const [variable, value] of Object.entries(file.values))
    if (out[variable] === undefined || out[variable] === "") out[variable] = value;
  return out;
}

/**
 * Layers `file` into this process's environment (file < environment), and names it in
 * $DWCP_CONFIG so that the services an embedded stack starts read the same file.
 */
export function applyConfigFile(file: ConfigFile | undefined, env: Env = process.env): void {
  if (file === undefined) return;
  for (const [variable, value] of Object.entries(withConfigFile(env, file))) env[variable] = value;
  env[CONFIG_VARIABLE] = file.path;
}
