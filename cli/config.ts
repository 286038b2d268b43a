// `dwcp config --print`: every setting's effective value and where it comes from (default, the
// config file, the environment or a flag). Secrets, keys and token files are shown as set or
// unset, never their value.
import type { ConfigFile } from "#common/config-file.js";
import { effectiveSettings, UNIQUE_FLAGS, type EffectiveSetting } from "#common/settings.js";

/** One setting as `--json` prints it. */
export interface SettingReport {
  key: string;
  variable: string;
  flag?: string;
  /** The value in effect; null: unset. Absent for secrets. */
  value?: string | null;
  /** For secrets: whether one is set. */
  set?: boolean;
  secret: boolean;
  source: "default" | "file" | "env" | "flag";
  /** The file's path, the variable or the flag the value came from. */
  from?: string;
}

export interface ConfigReport {
  /** The config file read, or null. */
  file: string | null;
  settings: SettingReport[];
}

/** The flags `dwcp config` was given (parseArgs values), by the variable each stands for. */
export function flagValues(values: Record<string, string | boolean | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [flag, s] of UNIQUE_FLAGS) {
    const v = values[flag];
    if (v === undefined || v === false) continue;
    out[s.env] = v === true ? "on" : v;
  }
  return out;
}

function reportOf(e: EffectiveSetting): SettingReport {
  const s = e.setting;
  const from =
    e.from.source === "file"
      ? e.from.path
      : e.from.source === "env"
        ? e.from.variable
        : e.from.source === "flag"
          ? e.from.flag
          : undefined;
  return {
    key: s.key,
    variable: s.env,
    ...(s.flag !== undefined ? { flag: `--${s.flag}` } : {}),
    ...(s.secret === true ? { set: e.value !== undefined } : { value: e.value ?? null }),
    secret: s.secret === true,
    source: e.from.source,
    ...(from !== undefined ? { from } : {}),
  };
}

export function configReport(o: {
  env: Record<string, string | undefined>;
  file: ConfigFile | undefined;
  flags: Record<string, string>;
}): ConfigReport {
  return {
    file: o.file?.path ?? null,
    settings: effectiveSettings(o).map(reportOf),
  };
}

/** The report as a table for people. */
export function configText(r: ConfigReport): string {
  const rows = r.settings.map((s) => [
    s.key,
    s.variable,
    s.secret ? (s.set ? "(set)" : "(unset)") : (s.value ?? "(unset)"),
    s.from === undefined ? s.source : `${s.source} ${s.from}`,
  ]);
  const header = ["SETTING", "VARIABLE", "VALUE", "SOURCE"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [`config file: ${r.file ?? "none"}`, line(header), ...rows.map(line)].join("\n");
}
