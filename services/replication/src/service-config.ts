import { z } from "zod";
import { loadConfig, natsUrlFromEnv, withProcessConfig, type ProcessConfig } from "#common/config.js";
import { ConfigError } from "#common/errors.js";
import { hostIdentity } from "#common/pki.js";
import { linkClientSecurity, loadLinkSecurity, type LinkSecurity } from "#common/secure-link/tls.js";
import { HostId } from "#schemas/common.js";
import { settingInput } from "#common/settings.js";
import { MetricsConfig, metricsInput, type MetricsFlags } from "#common/metrics/config.js";

const ServiceConfig = z.object({
  /** The source host this service reads volumes on; it serves dwcp.replication.<host>.rpc. */
  host: HostId,
  /** The `dwcp up` layout: host H's root is <dataDir>/hosts/H. Default ".dwcp". */
  dataDir: z.string().min(1),
  /** Explicit roots "a=/srv/a,b=/srv/b", taking precedence over dataDir for the hosts named. */
  roots: z.string().optional(),
  natsUrl: z.string().min(1),
  /** Secret of remote replication agents (DWCP_SECRET); optional, never logged. */
  secret: z.string().optional(),
  /** DWCP_TLS_CA/CERT/KEY or DWCP_DATA_PLAINTEXT=on for links to remote agents; optional. */
  tls: linkClientSecurity,
  /** --metrics-listen / DWCP_METRICS_LISTEN and the token file: off when unset. */
  metrics: MetricsConfig,
});
export type ServiceConfig = Omit<z.infer<typeof ServiceConfig>, "tls"> & {
  /** How links to remote agents are secured; undefined: commands naming an agent are refused. Never logged. */
  link: LinkSecurity | undefined;
};

export interface ServiceFlags extends MetricsFlags {
  host?: string;
  "data-dir"?: string;
  roots?: string;
  nats?: string;
  /** --plaintext-data: links to agents without TLS (trusted links only), like DWCP_DATA_PLAINTEXT=on. */
  "plaintext-data"?: boolean;
}

/** The service's settings with the shared ones (NATS credentials among them) as `process`. */
export function serviceConfig(
  flags: ServiceFlags,
  env = process.env,
): Readonly<ServiceConfig & { process: ProcessConfig }> {
  const roots = settingInput("DWCP_REPL_ROOTS", env, flags.roots);
  const secret = settingInput("DWCP_SECRET", env);
  const own = (): Readonly<ServiceConfig> => {
    const { tls, ...c } = loadConfig(ServiceConfig, {
      host: settingInput("DWCP_HOST", env, flags.host) ?? "",
      dataDir: settingInput("DWCP_DATA_DIR", env, flags["data-dir"]),
      ...(roots ? { roots } : {}),
      natsUrl: flags.nats ?? natsUrlFromEnv(),
      ...(secret ? { secret } : {}),
      tls: { ...env, plaintextFlag: flags["plaintext-data"] === true },
      metrics: metricsInput(flags, env),
    });
    const link = loadLinkSecurity(tls);
    if (link?.mode === "tls" && !link.tls.identities.includes(hostIdentity(c.host)))
      throw new ConfigError([`DWCP_TLS_CERT names ${link.tls.identities.join(", ")}, not ${hostIdentity(c.host)}`]);
    return Object.freeze({ ...c, link });
  };
  return withProcessConfig(own, env);
}
