import { z } from "zod";
import { envInt, listenAddress, loadConfig, withProcessConfig, type ProcessConfig } from "#common/config.js";

const SECRET_PROBLEM = "DWCP_SECRET must be set to at least 16 characters (the same on every host)";

const AgentConfig = z
  .object({
    /** The destination root; the store is <root>/.dwcp-store. */
    root: z.string().min(1, "--root DIR is required"),
    listen: listenAddress("--listen"),
    /** Shared secret for the agent link (the movers' DWCP_SECRET); never logged. */
    secret: z.string().min(16, SECRET_PROBLEM),
    /**
     * libuv pool threads (UV_THREADPOOL_SIZE, default 16): the agent's reads, writes, fsyncs and
     * BLAKE3 run there, and 4 threads would serialise them.
     */
    threadPoolSize: envInt({ min: 1, max: 1024, unit: "threads" }),
  })
  .transform(({ listen, ...rest }) => ({ ...rest, listenHost: listen.host, listenPort: listen.port }));
export type AgentConfig = z.infer<typeof AgentConfig> & { process: ProcessConfig };

export interface AgentFlags {
  root?: string;
  listen?: string;
}

export function agentConfig(flags: AgentFlags, env = process.env): Readonly<AgentConfig> {
  const own = () =>
    loadConfig(AgentConfig, {
      root: flags.root ?? env["DWCP_REPL_ROOT"] ?? "",
      listen: flags.listen ?? env["DWCP_REPL_LISTEN"] ?? "127.0.0.1:0",
      secret: env["DWCP_SECRET"] ?? "",
      threadPoolSize: env["UV_THREADPOOL_SIZE"] || "16",
    });
  return withProcessConfig(own, env);
}

/**
 * The agent-link secret a replication source presents (DWCP_SECRET), or undefined where none is
 * set; one that is set but shorter than 16 characters is a ConfigError.
 */
export function sourceSecret(env: Record<string, string | undefined> = process.env): string | undefined {
  const value = env["DWCP_SECRET"];
  if (value === undefined || value === "") return undefined;
  return loadConfig(z.object({ DWCP_SECRET: z.string().min(16, SECRET_PROBLEM) }), { DWCP_SECRET: value }).DWCP_SECRET;
}
