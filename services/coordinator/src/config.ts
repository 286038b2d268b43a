import { z } from "zod";
import {
  envInt,
  loadConfig,
  natsUrlFromEnv,
  replicaCount,
  withProcessConfig,
  type ProcessConfig,
} from "#common/config.js";
import { MetricsConfig, metricsInput, type MetricsFlags } from "#common/metrics/config.js";
import { settingInput } from "#common/settings.js";
import { eventTrustSettings, type EventTrustSettings } from "#common/signing.js";

const CoordinatorConfig = z.object({
  natsUrl: z.string().min(1),
  /** Stream replicas: 1 standalone, 3 in a cluster. */
  replicas: replicaCount,
  /** Attempts per batch before the migration fails (the first one included). */
  maxAttempts: envInt({ min: 1, max: 100, unit: "attempts" }),
  backoffBaseMs: envInt({ min: 0, max: 3_600_000, unit: "milliseconds" }),
  backoffMaxMs: envInt({ min: 0, max: 3_600_000, unit: "milliseconds" }),
  /** How long a batch is retried while its destination is unreachable, before the migration fails. */
  unreachableLimitMs: envInt({ min: 0, max: 86_400_000, unit: "milliseconds" }),
  /** Longest wait between those retries. */
  unreachableBackoffMaxMs: envInt({ min: 0, max: 3_600_000, unit: "milliseconds" }),
  /** How long a mover has to answer a probe or finalize request. */
  rpcTimeoutMs: envInt({ min: 100, max: 3_600_000, unit: "milliseconds" }),
  /** --metrics-listen / DWCP_METRICS_LISTEN and the token file: off when unset. */
  metrics: MetricsConfig,
});
export type CoordinatorConfig = z.infer<typeof CoordinatorConfig> & {
  /** Signing key and trust file for events (DWCP_NKEY_FILE, DWCP_TRUST_FILE, DWCP_EVENTS_UNSIGNED). */
  events: EventTrustSettings;
  process: ProcessConfig;
};

export interface CoordinatorFlags extends MetricsFlags {
  nats?: string | undefined;
  replicas?: string | undefined;
}

export function coordinatorConfig(flags: CoordinatorFlags, env = process.env): Readonly<CoordinatorConfig> {
  const own = () => ({
    ...loadConfig(CoordinatorConfig, {
      natsUrl: flags.nats ?? natsUrlFromEnv(env),
      replicas: settingInput("DWCP_REPLICAS", env, flags.replicas),
      maxAttempts: settingInput("DWCP_MAX_ATTEMPTS", env),
      backoffBaseMs: settingInput("DWCP_BACKOFF_BASE_MS", env),
      backoffMaxMs: settingInput("DWCP_BACKOFF_MAX_MS", env),
      unreachableLimitMs: settingInput("DWCP_UNREACHABLE_LIMIT_MS", env),
      unreachableBackoffMaxMs: settingInput("DWCP_UNREACHABLE_BACKOFF_MAX_MS", env),
      rpcTimeoutMs: settingInput("DWCP_RPC_TIMEOUT_MS", env),
      metrics: metricsInput(flags, env),
    }),
    events: eventTrustSettings(env),
  });
  return withProcessConfig(own, env);
}
