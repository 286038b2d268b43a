import { join } from "node:path";
import { z } from "zod";
import { loadConfig } from "#common/config.js";

/** Flags of `dwcp backup` and `dwcp restore-log` that say where keys are. */
export interface BackupKeyFlags {
  /** `--sign-key FILE` (backup): an nkey seed (ed25519) or an HMAC secret of >= 32 bytes. */
  "sign-key"?: string;
  /** `--data-dir D`: the `dwcp up` stack whose admin key signs (creds/admin.nk) and is trusted (trust.json). */
  "data-dir"?: string;
}

const Settings = z.object({
  /** DWCP_BACKUP_KEY: the signing key file when --sign-key is not given. */
  DWCP_BACKUP_KEY: z.string().min(1).optional(),
  /** DWCP_TRUST_FILE: the deployment's trust.json; its admin key is trusted by restore-log. */
  DWCP_TRUST_FILE: z.string().min(1).optional(),
});

const settings = (env: Record<string, string | undefined>): z.infer<typeof Settings> =>
  loadConfig(Settings, {
    ...(env["DWCP_BACKUP_KEY"] ? { DWCP_BACKUP_KEY: env["DWCP_BACKUP_KEY"] } : {}),
    ...(env["DWCP_TRUST_FILE"] ? { DWCP_TRUST_FILE: env["DWCP_TRUST_FILE"] } : {}),
  });

/**
 * The file `dwcp backup` signs with: --sign-key, else DWCP_BACKUP_KEY, else the stack's admin
 * nkey <dataDir>/creds/admin.nk with --data-dir; undefined when none is given.
 */
export function signKeyFile(flags: BackupKeyFlags, env = process.env): string | undefined {
  const d = flags["data-dir"];
  return (
    flags["sign-key"] ?? settings(env).DWCP_BACKUP_KEY ?? (d !== undefined ? join(d, "creds/admin.nk") : undefined)
  );
}

/** The trust file whose admin key restore-log trusts: DWCP_TRUST_FILE, else <dataDir>/trust.json. */
export function trustFileOf(flags: BackupKeyFlags, env = process.env): string | undefined {
  const d = flags["data-dir"];
  return settings(env).DWCP_TRUST_FILE ?? (d !== undefined ? join(d, "trust.json") : undefined);
}
