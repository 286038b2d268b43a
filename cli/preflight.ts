// Everything the CLI checks before it loads a command: help, version, completion, the command's
// name, its flags against the table (commands.ts) and their values. Loads no service, so that
// `--help` and every usage error are quick and have no side effect.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { parseCount, parseDuration, parsePort, parseRate, parseSize, UsageError } from "./args.js";
import { commandSpec, flagsOf, parseOptions, VERSION_FLAGS, type CommandSpec, type FlagCheck } from "./commands.js";
import { bashCompletion, zshCompletion } from "./completion.js";
import { commandHelp, overview } from "./help.js";

/** What to do: print and exit, or run a command with arguments that passed every check. */
export type Preflight =
  | { done: true; text: string }
  | {
      done: false;
      cmd: CommandSpec;
      argv: string[];
      connectTimeoutMs?: number;
      /** --config FILE, taken out of argv. */
      configFile?: string;
      /** --data-dir DIR, where a dwcp.toml is looked for (left in argv). */
      dataDir?: string;
    };

/** The package's version, from the package.json above this file (sources or dist/). */
export function packageVersion(): string {
  for (let dir = import.meta.dirname; dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, "package.json");
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
    if (pkg.name === "dwcp") return pkg.version ?? "unknown";
  }
  return "unknown";
}

const CHECKS: Record<FlagCheck, (flag: string, value: string) => unknown> = {
  size: parseSize,
  rate: parseRate,
  duration: parseDuration,
  port: parsePort,
  count: parseCount,
  file: (flag, value) => {
    if (!existsSync(value)) throw new UsageError(`${flag}: ${value} does not exist`);
    if (!statSync(value).isFile()) throw new UsageError(`${flag}: ${value} is not a file`);
  },
};

/** `--help` or `-h` among the arguments (before a `--`). */
const wantsHelp = (argv: string[]): boolean => {
  const end = argv.indexOf("--");
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === "--help" || a === "-h");
};

function named(name: string | undefined): CommandSpec {
  const cmd = name === undefined ? undefined : commandSpec(name);
  if (!cmd) throw new UsageError(`unknown command "${name}"; run dwcp help for the list`);
  return cmd;
}

export function preflight(argv: string[]): Preflight {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h") return { done: true, text: overview() };
  if (VERSION_FLAGS.includes(name) || name === "version") return { done: true, text: `dwcp ${packageVersion()}` };
  const cmd = named(name);
  if (wantsHelp(rest)) return { done: true, text: commandHelp(cmd) };
  if (name === "help") return { done: true, text: rest[0] === undefined ? overview() : commandHelp(named(rest[0])) };
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: parseOptions(cmd), allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message.split(". To specify")[0]}; run dwcp ${cmd.name} --help`);
  }
  const positionals = cmd.positionals ?? [];
  if (parsed.positionals.length > positionals.length)
    throw new UsageError(
      `unexpected argument "${parsed.positionals[positionals.length]}"; usage: dwcp ${cmd.name} ${cmd.usage}`,
    );
  positionals.forEach((p, i) => {
    const given = parsed.positionals[i];
    if (given === undefined && p.required)
      throw new UsageError(`${cmd.name} needs ${p.name}; usage: dwcp ${cmd.name} ${cmd.usage}`);
    if (given !== undefined && p.choices && !p.choices.includes(given))
      throw new UsageError(`${cmd.name}: ${p.name} must be one of ${p.choices.join(", ")}, got "${given}"`);
  });
  for (const f of flagsOf(cmd)) {
    const v = (parsed.values as Record<string, string | string[] | boolean | undefined>)[f.name];
    if (f.check === undefined || v === undefined || typeof v === "boolean") continue;
    for (const one of Array.isArray(v) ? v : [v]) CHECKS[f.check](`--${f.name}`, one);
  }
  if (name === "completion")
    return { done: true, text: parsed.positionals[0] === "zsh" ? zshCompletion() : bashCompletion() };
  const values = parsed.values as { "connect-timeout"?: string; config?: string; "data-dir"?: string };
  const timeout = values["connect-timeout"];
  let rest2 = timeout === undefined ? rest : withoutFlag(rest, "--connect-timeout");
  if (values.config !== undefined) rest2 = withoutFlag(rest2, "--config");
  return {
    done: false,
    cmd,
    argv: rest2,
    ...(timeout !== undefined ? { connectTimeoutMs: parseDuration("--connect-timeout", timeout) } : {}),
    ...(values.config !== undefined ? { configFile: values.config } : {}),
    ...(values["data-dir"] !== undefined ? { dataDir: values["data-dir"] } : {}),
  };
}

/** `argv` without `flag VALUE` / `flag=VALUE`. */
function withoutFlag(argv: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    if (a === flag) i++;
    else if (!a.startsWith(`${flag}=`)) out.push(a);
  }
  return out;
}
