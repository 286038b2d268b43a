import { z } from "zod";
import { envInt, listenAddress, loadConfig, withProcessConfig, type ProcessConfig } from "#common/config.js";
import { InvariantViolationError } from "#common/errors.js";
import { MetricsConfig, metricsInput, type MetricsFlags } from "#common/metrics/config.js";
import { settingInput } from "#common/settings.js";
import { linkServerSecurity, loadLinkSecurity, type LinkSecurity } from "#common/secure-link/tls.js";

const SECRET_PROBLEM = "DWCP_SECRET must be set to at least 16 characters (the same on every host)";

const AgentConfig = z
  .object({
    /** The destination root; a source's `--to HOST:DIR` store is <root>/<DIR>/.dwcp-store. */
    root: z.string().min(1, "--root DIR is required"),
    listen: listenAddress("--listen"),
    /** Shared secret for the agent link (the movers' DWCP_SECRET); never logged. */
    secret: z.string().min(16, SECRET_PROBLEM),
    /**
     * libuv pool threads (UV_THREADPOOL_SIZE, default 16): the agent's reads, writes, fsyncs and
     * BLAKE3 run there, and 4 threads would serialise them.
     */
    threadPoolSize: envInt({ min: 1, max: 1024, unit: "threads" }),
    /** DWCP_TLS_CA/CERT/KEY (TLS 1.3 with mutual auth; this host's certificate) or DWCP_DATA_PLAINTEXT=on. */
    tls: linkServerSecurity,
    /** --metrics-listen / DWCP_METRICS_LISTEN and the token file: off when unset. */
    metrics: MetricsConfig,
  })
  .transform(({ listen, ...rest }) => ({ ...rest, listenHost: listen.host, listenPort: listen.port }));
export type AgentConfig = Omit<z.infer<typeof AgentConfig>, "tls"> & {
  /** How the agent link is secured: TLS 1.3 with mutual authentication, or plaintext by choice. Never logged. */
  link: LinkSecurity;
  process: ProcessConfig;
};

export interface AgentFlags extends MetricsFlags {
  root?: string;
  listen?: string;
  /** --plaintext-data: the agent link without TLS (trusted links only), like DWCP_DATA_PLAINTEXT=on. */
  "plaintext-data"?: boolean;
}

export function agentConfig(flags: AgentFlags, env = process.env): Readonly<AgentConfig> {
  const own = () => {
    const { tls, ...c } = loadConfig(AgentConfig, {
      root: settingInput("DWCP_REPL_ROOT", env, flags.root) ?? "",
      listen: settingInput("DWCP_REPL_LISTEN", env, flags.listen),
      secret: settingInput("DWCP_SECRET", env) ?? "",
      threadPoolSize: env["UV_THREADPOOL_SIZE"] || "16",
      tls: { ...env, plaintextFlag: flags["plaintext-data"] === true },
      metrics: metricsInput(flags, env),
    });
    const link = loadLinkSecurity(tls);
    if (link === undefined) throw new InvariantViolationError("the config check lets no agent start without a link");
    return { ...c, link };
  };
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
