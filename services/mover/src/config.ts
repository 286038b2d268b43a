import { resolve } from "node:path";
import { z } from "zod";
import { HostId } from "#schemas/index.js";
import { ConfigError, InvariantViolationError } from "#common/errors.js";
import { hostIdentity } from "#common/pki.js";
import {
  envInt,
  envSwitch,
  replicaCount,
  listenAddress,
  loadConfig,
  natsUrlFromEnv,
  withProcessConfig,
  type ProcessConfig,
} from "#common/config.js";
import { MetricsConfig, metricsInput, type MetricsFlags } from "#common/metrics/config.js";
import { settingInput } from "#common/settings.js";
import { linkServerSecurity, loadLinkSecurity, type LinkSecurity } from "#common/secure-link/tls.js";

/** Data-channel switches, read from the environment when a data server starts. */
const DataChannelEnv = z.object({
  /** DWCP_NATIVE_RECV=off: Node's socket reads instead of the native recv path. Default on. */
  DWCP_NATIVE_RECV: envSwitch.default("on"),
  /** DWCP_LOCAL_COPY=off: a batch between two volumes of this process goes through the socket too. Default on. */
  DWCP_LOCAL_COPY: envSwitch.default("on"),
});

export interface DataChannelConfig {
  /** Receive with the native recv path where the module is loaded (DWCP_NATIVE_RECV, default on). */
  nativeRecv: boolean;
  /** Copy a batch whose destination is this very mover without the socket (DWCP_LOCAL_COPY, default on). */
  localCopy: boolean;
}

const dataChannelFields = (e: z.infer<typeof DataChannelEnv>): DataChannelConfig => ({
  nativeRecv: e.DWCP_NATIVE_RECV === "on",
  localCopy: e.DWCP_LOCAL_COPY === "on",
});

/**
 * The data channel's switches, read from the environment now: a data server reads them as it
 * starts (tests start servers with each setting in one process).
 */
export function dataChannelConfig(env: Record<string, string | undefined> = process.env): Readonly<DataChannelConfig> {
  return Object.freeze(dataChannelFields(loadConfig(DataChannelEnv, env)));
}

const MoverConfig = z
  .object({
    natsUrl: z.string().min(1),
    host: HostId,
    /** Directories this mover may read and write under; nothing outside them is touched. */
    roots: z.array(z.string().min(1)).min(1, "at least one --root DIR is required"),
    listen: listenAddress("--listen"),
    /** Host name other movers use to reach this one's data channel (defaults to the listen host). */
    advertiseHost: z.string().min(1).optional(),
    /** Cluster secret for data-channel authentication; never logged. */
    secret: z.string().min(16, "DWCP_SECRET must be set to at least 16 characters (the same on every mover)"),
    /** Batches moved at once. */
    concurrency: envInt({ min: 1, max: 64, unit: "batches" }),
    /** How long a batch whose connection dropped keeps reconnecting to resume before it fails. */
    resumeWindowMs: envInt({ min: 0, max: 3_600_000, unit: "milliseconds" }),
    /** DWCP_LINK_RATE: the rate of the link to each destination mover, bytes/s; set, migrations share it. */
    linkRateBytesPerSec: envInt({ min: 1, max: 2 ** 50, unit: "bytes per second" }).optional(),
    /** --standby: serve the host's work queue beside the lease holder, and take its lease over when it lapses. */
    standby: z.boolean(),
    /** --vm-state-dir / DWCP_VM_STATE_DIR: the VMs this host runs (`dwcp vm`); unset, no live migrations. */
    vmStateDir: z.string().min(1).max(4096).optional(),
    /** How often the host lease is renewed (DWCP_LEASE_HEARTBEAT_MS). */
    leaseHeartbeatMs: envInt({ min: 100, max: 600_000, unit: "milliseconds" }),
    /** How long an unrenewed host lease stays live (DWCP_LEASE_TTL_MS; default three heartbeats). */
    leaseTtlMs: envInt({ min: 300, max: 3_600_000, unit: "milliseconds" }).optional(),
    replicas: replicaCount,
    env: DataChannelEnv,
    /** DWCP_TLS_CA/CERT/KEY (the data channel's TLS 1.3 with mutual auth) or DWCP_DATA_PLAINTEXT=on. */
    tls: linkServerSecurity,
    /** --metrics-listen / DWCP_METRICS_LISTEN and the token file: off when unset. */
    metrics: MetricsConfig,
  })
  .refine((c) => c.leaseTtlMs === undefined || c.leaseTtlMs >= 2 * c.leaseHeartbeatMs, {
    path: ["leaseTtlMs"],
    message: "DWCP_LEASE_TTL_MS must be at least two heartbeats (DWCP_LEASE_HEARTBEAT_MS)",
  })
  .transform(({ listen, advertiseHost, env, tls, leaseTtlMs, vmStateDir, ...rest }) => ({
    ...rest,
    vmStateDir: vmStateDir === undefined ? undefined : resolve(vmStateDir),
    leaseTtlMs: leaseTtlMs ?? 3 * rest.leaseHeartbeatMs,
    listenHost: listen.host,
    listenPort: listen.port,
    advertiseHost: advertiseHost ?? (listen.host === "0.0.0.0" ? "127.0.0.1" : listen.host),
    ...dataChannelFields(env),
    linkSetting: tls,
  }));
export type MoverConfig = Omit<z.infer<typeof MoverConfig>, "linkSetting"> & {
  /**
   * How the data channel is secured: TLS 1.3 with mutual authentication from the deployment CA
   * (the certificate must name dwcp:host:<host>), or plaintext by explicit choice. Never logged.
   */
  link: LinkSecurity;
  process: ProcessConfig;
};

export interface MoverFlags extends MetricsFlags {
  nats?: string;
  host?: string;
  root?: string[];
  listen?: string;
  advertise?: string;
  concurrency?: string;
  replicas?: string;
  /** --standby: run beside the host's lease holder (see Registry). */
  standby?: boolean;
  /** --vm-state-dir: where `dwcp vm` records this host's VMs (live migrations run from and to there). */
  "vm-state-dir"?: string;
  /** --plaintext-data: the data channel without TLS (trusted links only), like DWCP_DATA_PLAINTEXT=on. */
  "plaintext-data"?: boolean;
}

/**
 * The mover's settings from flags over DWCP_* variables, with the shared process settings
 * (#common/config.js): every problem of both is listed in one ConfigError.
 */
export function moverConfig(flags: MoverFlags, env = process.env): Readonly<MoverConfig> {
  const own = () => {
    const { linkSetting, ...c } = loadConfig(MoverConfig, {
      natsUrl: flags.nats ?? natsUrlFromEnv(env),
      host: settingInput("DWCP_HOST", env, flags.host),
      roots: flags.root ?? settingInput("DWCP_ROOTS", env)?.split(",").filter(Boolean) ?? [],
      listen: settingInput("DWCP_LISTEN", env, flags.listen),
      advertiseHost: settingInput("DWCP_ADVERTISE", env, flags.advertise),
      secret: settingInput("DWCP_SECRET", env) ?? "",
      concurrency: settingInput("DWCP_CONCURRENCY", env, flags.concurrency),
      resumeWindowMs: settingInput("DWCP_RESUME_WINDOW_MS", env),
      linkRateBytesPerSec: settingInput("DWCP_LINK_RATE", env),
      standby: flags.standby === true,
      vmStateDir: settingInput("DWCP_VM_STATE_DIR", env, flags["vm-state-dir"]),
      leaseHeartbeatMs: settingInput("DWCP_LEASE_HEARTBEAT_MS", env),
      leaseTtlMs: settingInput("DWCP_LEASE_TTL_MS", env),
      replicas: settingInput("DWCP_REPLICAS", env, flags.replicas),
      env,
      tls: { ...env, plaintextFlag: flags["plaintext-data"] === true },
      metrics: metricsInput(flags, env),
    });
    const link = loadLinkSecurity(linkSetting);
    if (link === undefined) throw new InvariantViolationError("the config check lets no mover start without a link");
    if (link.mode === "tls" && !link.tls.identities.includes(hostIdentity(c.host)))
      throw new ConfigError([`DWCP_TLS_CERT names ${link.tls.identities.join(", ")}, not ${hostIdentity(c.host)}`]);
    return { ...c, link };
  };
  return withProcessConfig(own, env);
}
