import { z } from "zod";
import { loadConfig, natsUrlFromEnv, withProcessConfig, type ProcessConfig } from "#common/config.js";
import { HostId } from "#schemas/common.js";

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
});
export type ServiceConfig = z.infer<typeof ServiceConfig>;

export interface ServiceFlags {
  host?: string;
  "data-dir"?: string;
  roots?: string;
  nats?: string;
}

/** The service's settings with the shared ones (NATS credentials among them) as `process`. */
export function serviceConfig(
  flags: ServiceFlags,
  env = process.env,
): Readonly<ServiceConfig & { process: ProcessConfig }> {
  const roots = flags.roots ?? env["DWCP_REPL_ROOTS"];
  const secret = env["DWCP_SECRET"];
  const own = () =>
    loadConfig(ServiceConfig, {
      host: flags.host ?? env["DWCP_HOST"] ?? "",
      dataDir: flags["data-dir"] ?? env["DWCP_DATA_DIR"] ?? ".dwcp",
      ...(roots ? { roots } : {}),
      natsUrl: flags.nats ?? natsUrlFromEnv(),
      ...(secret ? { secret } : {}),
    });
  return withProcessConfig(own, env);
}
