import { z } from "zod";
import { ConfigError } from "#common/errors.js";
import { loadConfig, parseHostPort } from "#common/config.js";

const AgentConfig = z.object({
  /** The destination root; the store is <root>/.dwcp-store. */
  root: z.string().min(1, "--root DIR is required"),
  listenHost: z.string().min(1),
  listenPort: z.number().int().min(0).max(65535),
  /** Shared secret for the agent link (the movers' DWCP_SECRET); never logged. */
  secret: z.string().min(16, "DWCP_SECRET must be set to at least 16 characters (the same on every host)"),
});
export type AgentConfig = z.infer<typeof AgentConfig>;

export interface AgentFlags {
  root?: string;
  listen?: string;
}

export function agentConfig(flags: AgentFlags, env = process.env): Readonly<AgentConfig> {
  const listen = flags.listen ?? env["DWCP_REPL_LISTEN"] ?? "127.0.0.1:0";
  const hp = parseHostPort(listen);
  if (!hp) throw new ConfigError([`--listen must be HOST:PORT, got "${listen}"`]);
  return loadConfig(AgentConfig, {
    root: flags.root ?? env["DWCP_REPL_ROOT"] ?? "",
    listenHost: hp.host,
    listenPort: hp.port,
    secret: env["DWCP_SECRET"] ?? "",
  });
}
