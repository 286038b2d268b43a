import { z } from "zod";
import { ConfigError } from "./errors.js";

/**
 * Validates a service's settings (flags already merged over environment) with its zod schema,
 * listing every problem at once, and freezes the result.
 */
export function loadConfig<S extends z.ZodType>(schema: S, input: unknown): Readonly<z.infer<S>> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".") || "(config)"}: ${i.message}`));
  }
  return Object.freeze(parsed.data);
}

/** Parses "HOST:PORT" (IPv6 as [::1]:PORT). */
export function parseHostPort(value: string): { host: string; port: number } | undefined {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value);
  if (!m || m[1] === undefined || m[2] === undefined) return undefined;
  const port = Number(m[2]);
  if (port > 65535) return undefined;
  return { host: m[1].replace(/^\[|\]$/g, ""), port };
}

/** A "HOST:PORT" listen address (flag or environment), parsed; `flag` names it in the problem. */
export const listenAddress = (flag: string) =>
  z.string().transform((value, ctx) => {
    const hp = parseHostPort(value);
    if (hp === undefined) ctx.addIssue({ code: "custom", message: `${flag} must be HOST:PORT, got "${value}"` });
    return hp ?? { host: "", port: 0 };
  });

/** A flag or environment variable holding a whole number: "abc" or "1.5" is a problem, not NaN. */
export const wholeNumber = (unit: string) =>
  z.string().regex(/^\d+$/, `must be a whole number of ${unit}`).transform(Number);

/** A whole number of `unit` in [min, max]. */
export const envInt = (o: { min: number; max: number; unit: string }) =>
  wholeNumber(o.unit).pipe(
    z.number().min(o.min, `must be at least ${o.min} ${o.unit}`).max(o.max, `must be at most ${o.max} ${o.unit}`),
  );

/** Stream replicas: 1 standalone, 3 or 5 in a cluster. */
export const replicaCount = wholeNumber("replicas").pipe(
  z.union([z.literal(1), z.literal(3), z.literal(5)], { message: "must be 1, 3 or 5" }),
);

/** An on/off switch in the environment; anything else is a problem. */
export const envSwitch = z.enum(["on", "off"], { message: 'must be "on" or "off"' });

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/**
 * The settings shared code (logging, file writes, stream layout, the native module, starting
 * nats-server) reads from the environment of any dwcp process, by variable name.
 */
const ProcessEnv = z.object({
  DWCP_NATS_URL: z.string().min(1).default(DEFAULT_NATS_URL),
  DWCP_LOG_LEVEL: z.enum(LOG_LEVELS, { message: `must be one of ${LOG_LEVELS.join(", ")}` }).default("info"),
  DWCP_DIRECT_IO: z.enum(["auto", "on", "off"], { message: 'must be "auto", "on" or "off"' }).default("auto"),
  DWCP_ACK_WAIT_MS: envInt({ min: 100, max: 3_600_000, unit: "milliseconds" }).default(30_000),
  DWCP_NATS_SERVER: z.string().min(1).optional(),
  DWCP_NATS_DOWN_LIMIT_MS: envInt({ min: 0, max: 86_400_000, unit: "milliseconds" }).default(0),
  DWCP_NATIVE: z.enum(["auto", "require", "off"], { message: 'must be "auto", "require" or "off"' }).default("auto"),
  DWCP_NKEY_FILE: z.string().min(1).optional(),
  DWCP_TLS_CA: z.string().min(1).optional(),
  DWCP_TLS_CERT: z.string().min(1).optional(),
  DWCP_TLS_KEY: z.string().min(1).optional(),
  DWCP_NATS_INSECURE: envSwitch.default("off"),
  DWCP_TRUST_FILE: z.string().min(1).optional(),
  DWCP_EVENTS_UNSIGNED: envSwitch.default("off"),
  DWCP_CONNECT_TIMEOUT_MS: envInt({ min: 100, max: 600_000, unit: "milliseconds" }).default(5_000),
});

export interface ProcessConfig {
  /** nats:// URL(s) of the cluster, comma-separated. DWCP_NATS_URL, default nats://127.0.0.1:4222. */
  natsUrl: string;
  /** pino level. DWCP_LOG_LEVEL, default "info". */
  logLevel: (typeof LOG_LEVELS)[number];
  /**
   * O_DIRECT for destination writes (common/fs.ts openDirect). DWCP_DIRECT_IO: "off" none, "on"
   * every aligned write, "auto" (default) the large ones.
   */
  directIo: "auto" | "on" | "off";
  /** How long a mover may hold a work item without a heartbeat, in ms. DWCP_ACK_WAIT_MS, default 30000. */
  ackWaitMs: number;
  /** The nats-server binary to start; unset: PATH, then /usr/sbin. DWCP_NATS_SERVER. */
  natsServer: string | undefined;
  /**
   * How long a service may stay disconnected from NATS before it gives up and ends `failed`
   * (exit 1, for its supervisor to restart it). DWCP_NATS_DOWN_LIMIT_MS, default 0: reconnect
   * forever, so a service outlives any outage.
   */
  natsDownLimitMs: number;
  /** Native module: "auto" (default) falls back to TypeScript, "require" fails without it, "off". DWCP_NATIVE. */
  native: "auto" | "require" | "off";
  /** The role's nkey seed file: the NATS user, and the key its events are signed with. DWCP_NKEY_FILE. */
  nkeyFile: string | undefined;
  /** The deployment's CA certificate (PEM), which every peer's certificate must chain to. DWCP_TLS_CA. */
  tlsCa: string | undefined;
  /** This process's certificate (PEM), for NATS and its data links. DWCP_TLS_CERT. */
  tlsCert: string | undefined;
  /** This process's private key (PEM, mode 0600). DWCP_TLS_KEY. */
  tlsKey: string | undefined;
  /**
   * "on": connect to NATS without credentials or TLS (a trusted test network only; logged as a
   * warning at start-up). DWCP_NATS_INSECURE, default "off": a service without credentials
   * refuses to start.
   */
  natsInsecure: "on" | "off";
  /** trust.json: which public nkey is which role (verifies events). DWCP_TRUST_FILE. */
  trustFile: string | undefined;
  /**
   * "on": sign no event and take every event unverified (a closed test bench only; logged as a
   * warning). DWCP_EVENTS_UNSIGNED, default "off": a service without a key and trust file refuses
   * to start.
   */
  eventsUnsigned: "on" | "off";
  /**
   * How long a command waits to reach NATS before it says it cannot, in ms (services wait
   * forever). DWCP_CONNECT_TIMEOUT_MS, default 5000; a command's --connect-timeout wins.
   */
  connectTimeoutMs: number;
}

const VARIABLE = {
  natsUrl: "DWCP_NATS_URL",
  logLevel: "DWCP_LOG_LEVEL",
  directIo: "DWCP_DIRECT_IO",
  ackWaitMs: "DWCP_ACK_WAIT_MS",
  natsServer: "DWCP_NATS_SERVER",
  natsDownLimitMs: "DWCP_NATS_DOWN_LIMIT_MS",
  native: "DWCP_NATIVE",
  nkeyFile: "DWCP_NKEY_FILE",
  tlsCa: "DWCP_TLS_CA",
  tlsCert: "DWCP_TLS_CERT",
  tlsKey: "DWCP_TLS_KEY",
  natsInsecure: "DWCP_NATS_INSECURE",
  trustFile: "DWCP_TRUST_FILE",
  eventsUnsigned: "DWCP_EVENTS_UNSIGNED",
  connectTimeoutMs: "DWCP_CONNECT_TIMEOUT_MS",
} as const satisfies Record<keyof ProcessConfig, keyof z.input<typeof ProcessEnv>>;

type Env = Record<string, string | undefined>;

/** The environment with empty variables left out: `DWCP_X=` means "unset", as in a shell. */
const nonEmpty = (env: Env): Env => Object.fromEntries(Object.entries(env).filter(([, v]) => v !== ""));

/**
 * Every shared setting at once, validated and frozen; a ConfigError lists every bad variable.
 * Services check it at start-up (their config.ts), so a typo fails there and not mid-transfer.
 */
export function processConfig(env: Env = process.env): Readonly<ProcessConfig> {
  const e = loadConfig(ProcessEnv, nonEmpty(env));
  return Object.freeze(
    Object.fromEntries(Object.entries(VARIABLE).map(([key, name]) => [key, e[name]])) as unknown as ProcessConfig,
  );
}

/**
 * One shared setting, read from the environment now (tests switch some of them between cases),
 * validated alone so that a bad variable elsewhere does not fail this read.
 */
export function processSetting<K extends keyof ProcessConfig>(key: K, env: Env = process.env): ProcessConfig[K] {
  const name = VARIABLE[key];
  const raw = env[name];
  // Read on hot paths (every file a mover opens asks for DWCP_DIRECT_IO): a value validated once
  // is remembered with the text it came from, so a changed variable is validated again.
  const known = settings.get(name);
  if (known !== undefined && known.raw === raw) return known.value as ProcessConfig[K];
  const one = z.object({ [name]: ProcessEnv.shape[name] as z.ZodType });
  const value = loadConfig(one, nonEmpty({ [name]: raw }))[name] as ProcessConfig[K];
  settings.set(name, { raw, value });
  return value;
}

/** The last value of each shared setting processSetting validated, and the variable's text then. */
const settings = new Map<string, { raw: string | undefined; value: unknown }>();

export const natsUrlFromEnv = (env: Env = process.env): string => processSetting("natsUrl", env);

/**
 * A service's own settings (`own`, which calls loadConfig) with the shared process settings, as
 * `process`: one ConfigError lists the problems of both.
 */
export function withProcessConfig<T extends object>(
  own: () => Readonly<T>,
  env: Env = process.env,
): Readonly<T & { process: ProcessConfig }> {
  const problems: string[] = [];
  const attempt = <R>(load: () => R): R | undefined => {
    try {
      return load();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems);
      return undefined;
    }
  };
  const mine = attempt(own);
  const shared = attempt(() => processConfig(env));
  if (mine === undefined || shared === undefined) throw new ConfigError(problems);
  return Object.freeze({ ...mine, process: shared });
}
