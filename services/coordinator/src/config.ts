import { z } from "zod";
import { loadConfig, natsUrlFromEnv } from "#common/config.js";

const CoordinatorConfig = z.object({
  natsUrl: z.string().min(1),
  /** Stream replicas: 1 standalone, 3 in a cluster. */
  replicas: z.union([z.literal(1), z.literal(3), z.literal(5)]),
  /** Attempts per batch before the migration fails (the first one included). */
  maxAttempts: z.number().int().min(1).max(100),
  backoffBaseMs: z.number().int().min(0),
  backoffMaxMs: z.number().int().min(0),
  /** How long a mover has to answer a probe or finalize request. */
  rpcTimeoutMs: z.number().int().min(100),
});
export type CoordinatorConfig = z.infer<typeof CoordinatorConfig>;

const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v));

export function coordinatorConfig(
  flags: { nats?: string; replicas?: string },
  env = process.env,
): Readonly<CoordinatorConfig> {
  return loadConfig(CoordinatorConfig, {
    natsUrl: flags.nats ?? natsUrlFromEnv(),
    replicas: num(flags.replicas ?? env["DWCP_REPLICAS"]) ?? 1,
    maxAttempts: num(env["DWCP_MAX_ATTEMPTS"]) ?? 5,
    backoffBaseMs: num(env["DWCP_BACKOFF_BASE_MS"]) ?? 500,
    backoffMaxMs: num(env["DWCP_BACKOFF_MAX_MS"]) ?? 30_000,
    rpcTimeoutMs: num(env["DWCP_RPC_TIMEOUT_MS"]) ?? 30_000,
  });
}
