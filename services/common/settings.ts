// Every setting a dwcp process reads, declared once: its key in dwcp.toml, its environment
// variable, its flag, type, default, readers and meaning. The config file's schema
// (config-file.ts), `dwcp config --print`, docs/configuration.md (scripts/config-docs.ts) and the
// services' config loaders are made from this table, so precedence (file < environment < flag)
// is implemented here once. It imports nothing: `dwcp --help` and the docs script load it cheaply.

/** What a setting holds: how the file gives it, and what the environment's text must be. */
export type SettingType =
  /**
   * A whole number of `unit` in [min, max] (and among `oneOf` if given): a TOML integer, decimal
   * text in the environment.
   */
  | { kind: "int"; min: number; max: number; unit: string; oneOf?: readonly number[] }
  /** true/false (or "on"/"off") in the file, "on"/"off" in the environment. */
  | { kind: "switch" }
  /** One of `values`, as a string in both. */
  | { kind: "enum"; values: readonly string[] }
  /** A string of 1 to `max` characters (a URL, a path, an id, HOST:PORT). */
  | { kind: "text"; max: number; what: string }
  /** An array of strings in the file, comma-separated in the environment; 1 to `max` items. */
  | { kind: "list"; max: number; what: string };

/** Who reads a setting, as the docs and `dwcp config --print` name them. */
export type Reader =
  | "every process"
  | "services"
  | "CLI"
  | "coordinator"
  | "mover"
  | "replication service"
  | "replication agent"
  | "`dwcp up`";

export interface Setting {
  /** "section.name": the key in dwcp.toml (`[section]` then `name = ...`). */
  key: string;
  /** The environment variable, which overrides the file. */
  env: string;
  /** The flag (without "--") that overrides both, where a command has one. */
  flag?: string;
  type: SettingType;
  /** The value when nothing sets it, as the environment would hold it; none: unset. */
  default?: string;
  /** What docs say when unset and there is no plain default (computed, or derived). */
  defaultText?: string;
  readBy: readonly Reader[];
  /** A secret or the path of a key or token: printed as set or unset, never its value. */
  secret?: boolean;
  /** One line for the docs. */
  help: string;
}

const ms = (min: number, max: number): SettingType => ({ kind: "int", min, max, unit: "milliseconds" });
const SWITCH: SettingType = { kind: "switch" };
const PATH: SettingType = { kind: "text", max: 4096, what: "a file path" };
const DIR: SettingType = { kind: "text", max: 4096, what: "a directory" };
const HOST_PORT: SettingType = { kind: "text", max: 300, what: "HOST:PORT" };

export const SETTINGS = [
  // [nats]: reaching the cluster.
  {
    key: "nats.url",
    env: "DWCP_NATS_URL",
    flag: "nats",
    type: { kind: "text", max: 4096, what: "nats:// URL(s), comma-separated" },
    default: "nats://127.0.0.1:4222",
    readBy: ["every process"],
    help: "NATS server URL(s), comma-separated",
  },
  {
    key: "nats.connect_timeout_ms",
    env: "DWCP_CONNECT_TIMEOUT_MS",
    type: ms(100, 600_000),
    default: "5000",
    readBy: ["CLI"],
    help: "how long a command tries to reach NATS (a command's `--connect-timeout DURATION` wins)",
  },
  {
    key: "nats.down_limit_ms",
    env: "DWCP_NATS_DOWN_LIMIT_MS",
    type: ms(0, 86_400_000),
    default: "0",
    readBy: ["services"],
    help: "how long a service may be cut off from NATS before it ends `failed`, exit 1 (0: forever)",
  },
  {
    key: "nats.insecure",
    env: "DWCP_NATS_INSECURE",
    type: SWITCH,
    default: "off",
    readBy: ["every process"],
    help: "connect without credentials or TLS: trusted test networks only",
  },
  {
    key: "nats.nkey_file",
    env: "DWCP_NKEY_FILE",
    flag: "creds",
    type: PATH,
    defaultText: "the CLI: `<data dir>/creds/cli.nk`",
    readBy: ["every process"],
    secret: true,
    help: "the role's nkey seed: its NATS user and the key its events are signed with",
  },
  {
    key: "nats.server",
    env: "DWCP_NATS_SERVER",
    type: PATH,
    defaultText: "PATH, then /usr/sbin",
    readBy: ["`dwcp up`", "CLI"],
    help: "the nats-server binary embedded stacks (`up`, `demo`, `drill`) start",
  },
  {
    key: "nats.ack_wait_ms",
    env: "DWCP_ACK_WAIT_MS",
    type: ms(100, 3_600_000),
    default: "30000",
    readBy: ["coordinator", "mover"],
    help: "how long a mover may hold a work item without a heartbeat",
  },
  {
    key: "nats.replicas",
    env: "DWCP_REPLICAS",
    flag: "replicas",
    type: { kind: "int", min: 1, max: 5, unit: "replicas", oneOf: [1, 3, 5] },
    default: "1",
    readBy: ["coordinator", "mover"],
    help: "JetStream replicas of the streams and work queues they create",
  },
  // [tls]: certificates for NATS and the data links.
  {
    key: "tls.ca",
    env: "DWCP_TLS_CA",
    flag: "tls-ca",
    type: PATH,
    readBy: ["every process"],
    help: "the deployment's CA certificate (PEM)",
  },
  {
    key: "tls.cert",
    env: "DWCP_TLS_CERT",
    flag: "tls-cert",
    type: PATH,
    readBy: ["every process"],
    help: "this process's certificate (PEM), for NATS and data links",
  },
  {
    key: "tls.key",
    env: "DWCP_TLS_KEY",
    flag: "tls-key",
    type: PATH,
    readBy: ["every process"],
    secret: true,
    help: "this process's private key (PEM, mode 0600)",
  },
  // [events]: signing and verifying the event log.
  {
    key: "events.trust_file",
    env: "DWCP_TRUST_FILE",
    type: PATH,
    defaultText: "the CLI: `<data dir>/trust.json`",
    readBy: ["every process"],
    help: "trust.json: which public nkey is which role",
  },
  {
    key: "events.unsigned",
    env: "DWCP_EVENTS_UNSIGNED",
    type: SWITCH,
    default: "off",
    readBy: ["every process"],
    help: "sign nothing and read events unverified: closed test benches only",
  },
  // [process]: how any dwcp process runs.
  {
    key: "process.log_level",
    env: "DWCP_LOG_LEVEL",
    type: { kind: "enum", values: ["fatal", "error", "warn", "info", "debug", "trace", "silent"] },
    default: "info",
    readBy: ["services"],
    help: "pino log level",
  },
  {
    key: "process.native",
    env: "DWCP_NATIVE",
    type: { kind: "enum", values: ["auto", "require", "off"] },
    default: "auto",
    readBy: ["every process"],
    help: "native module: `auto` falls back to TypeScript, `require` fails without it, `off`",
  },
  {
    key: "process.direct_io",
    env: "DWCP_DIRECT_IO",
    type: { kind: "enum", values: ["auto", "on", "off"] },
    default: "auto",
    readBy: ["mover", "replication service"],
    help: "O_DIRECT for destination writes: `auto` the large aligned ones, `on` every aligned one, `off`",
  },
  {
    key: "process.node_flags",
    env: "DWCP_NODE_FLAGS",
    type: { kind: "text", max: 1024, what: "node flags, space-separated" },
    readBy: ["`dwcp up`"],
    help: "flags for the node of each service an embedded stack starts, e.g. `--cpu-prof`",
  },
  // [link]: the data channel and replication agent links.
  {
    key: "link.secret",
    env: "DWCP_SECRET",
    type: { kind: "text", max: 1024, what: "a secret, 16+ characters" },
    readBy: ["mover", "replication service", "replication agent", "CLI"],
    secret: true,
    help: "the data links' shared secret, 16+ characters, the same on every host",
  },
  {
    key: "link.plaintext",
    env: "DWCP_DATA_PLAINTEXT",
    flag: "plaintext-data",
    type: SWITCH,
    default: "off",
    readBy: ["mover", "replication service", "replication agent"],
    help: "data links without TLS: trusted links only",
  },
  // [host]: which host this process serves.
  {
    key: "host.id",
    env: "DWCP_HOST",
    flag: "host",
    type: { kind: "text", max: 64, what: "a host id" },
    readBy: ["mover", "replication service"],
    help: "this host's id",
  },
  // [mover]
  {
    key: "mover.roots",
    env: "DWCP_ROOTS",
    flag: "root",
    type: { kind: "list", max: 64, what: "directories" },
    readBy: ["mover"],
    help: "directories it may read and write (`--root` is repeatable)",
  },
  {
    key: "mover.listen",
    env: "DWCP_LISTEN",
    flag: "listen",
    type: HOST_PORT,
    default: "127.0.0.1:0",
    readBy: ["mover"],
    help: "the data channel's address",
  },
  {
    key: "mover.advertise",
    env: "DWCP_ADVERTISE",
    flag: "advertise",
    type: { kind: "text", max: 255, what: "a host name or address" },
    defaultText: "the listen host (127.0.0.1 for 0.0.0.0)",
    readBy: ["mover"],
    help: "the address other movers dial",
  },
  {
    key: "mover.concurrency",
    env: "DWCP_CONCURRENCY",
    flag: "concurrency",
    type: { kind: "int", min: 1, max: 64, unit: "batches" },
    default: "2",
    readBy: ["mover"],
    help: "batches sent at once",
  },
  {
    key: "mover.resume_window_ms",
    env: "DWCP_RESUME_WINDOW_MS",
    type: ms(0, 3_600_000),
    default: "120000",
    readBy: ["mover"],
    help:
      "how long a batch whose connection dropped keeps reconnecting to resume at its first chunk the " +
      "destination has not committed",
  },
  {
    key: "mover.link_rate",
    env: "DWCP_LINK_RATE",
    type: { kind: "int", min: 1, max: 2 ** 50, unit: "bytes per second" },
    readBy: ["mover"],
    defaultText: "unknown: no link sharing",
    help:
      "the rate of the link from this mover to each destination mover: set, the migrations sending over " +
      "one link share it by priority and weight, paced at this rate",
  },
  {
    key: "mover.vm_state_dir",
    env: "DWCP_VM_STATE_DIR",
    flag: "vm-state-dir",
    type: DIR,
    readBy: ["mover"],
    defaultText: "none: the mover runs no live migrations",
    help:
      "where `dwcp vm` records the VMs this host runs (its `--state-dir`): a live migration's source " +
      "guest is found there and its destination guest recorded there",
  },
  {
    key: "mover.lease_heartbeat_ms",
    env: "DWCP_LEASE_HEARTBEAT_MS",
    type: ms(100, 600_000),
    default: "5000",
    readBy: ["mover"],
    help: "how often a mover renews its host's lease in dwcp_movers",
  },
  {
    key: "mover.lease_ttl_ms",
    env: "DWCP_LEASE_TTL_MS",
    type: ms(200, 3_600_000),
    readBy: ["mover"],
    help: "how long an unrenewed host lease stays live (default: three heartbeats, at least two)",
  },
  {
    key: "mover.native_recv",
    env: "DWCP_NATIVE_RECV",
    type: SWITCH,
    default: "on",
    readBy: ["mover"],
    help: "`off`: Node's socket reads instead of the native recv path",
  },
  {
    key: "mover.local_copy",
    env: "DWCP_LOCAL_COPY",
    type: SWITCH,
    default: "on",
    readBy: ["mover"],
    help: "`off`: a batch between two volumes of one mover goes through the socket too",
  },
  // [coordinator]
  {
    key: "coordinator.max_attempts",
    env: "DWCP_MAX_ATTEMPTS",
    type: { kind: "int", min: 1, max: 100, unit: "attempts" },
    default: "5",
    readBy: ["coordinator"],
    help: "attempts per batch before the migration fails (the first one included)",
  },
  {
    key: "coordinator.backoff_base_ms",
    env: "DWCP_BACKOFF_BASE_MS",
    type: ms(0, 3_600_000),
    default: "500",
    readBy: ["coordinator"],
    help: "retry delay of a failed batch, doubled per attempt",
  },
  {
    key: "coordinator.backoff_max_ms",
    env: "DWCP_BACKOFF_MAX_MS",
    type: ms(0, 3_600_000),
    default: "30000",
    readBy: ["coordinator"],
    help: "longest retry delay",
  },
  {
    key: "coordinator.unreachable_limit_ms",
    env: "DWCP_UNREACHABLE_LIMIT_MS",
    type: ms(0, 86_400_000),
    default: "300000",
    readBy: ["coordinator"],
    help: "how long a batch is retried while its destination cannot be reached",
  },
  {
    key: "coordinator.unreachable_backoff_max_ms",
    env: "DWCP_UNREACHABLE_BACKOFF_MAX_MS",
    type: ms(0, 3_600_000),
    default: "5000",
    readBy: ["coordinator"],
    help: "longest retry delay while the destination cannot be reached",
  },
  {
    key: "coordinator.rpc_timeout_ms",
    env: "DWCP_RPC_TIMEOUT_MS",
    type: ms(100, 3_600_000),
    default: "30000",
    readBy: ["coordinator"],
    help: "how long a mover has to answer a probe or finalize request",
  },
  // [replication]
  {
    key: "replication.roots",
    env: "DWCP_REPL_ROOTS",
    flag: "roots",
    type: { kind: "text", max: 8192, what: "HOST=DIR,..." },
    readBy: ["replication service"],
    help: "each host's root, taking precedence over the data dir's layout for the hosts named",
  },
  {
    key: "replication.agent_root",
    env: "DWCP_REPL_ROOT",
    flag: "root",
    type: DIR,
    readBy: ["replication agent"],
    help: "the directory whose `.dwcp-store` the agent serves",
  },
  {
    key: "replication.agent_listen",
    env: "DWCP_REPL_LISTEN",
    flag: "listen",
    type: HOST_PORT,
    default: "127.0.0.1:0",
    readBy: ["replication agent"],
    help: "the agent's address",
  },
  // [metrics]
  {
    key: "metrics.listen",
    env: "DWCP_METRICS_LISTEN",
    flag: "metrics-listen",
    type: HOST_PORT,
    defaultText: "none",
    readBy: ["services"],
    help: "`HOST:PORT` of `/metrics`, `/healthz` and `/readyz`",
  },
  {
    key: "metrics.token_file",
    env: "DWCP_METRICS_TOKEN_FILE",
    flag: "metrics-token-file",
    type: PATH,
    readBy: ["services"],
    secret: true,
    help: "bearer token file every metrics and health request must present; required off loopback",
  },
  // [cli]
  {
    key: "cli.data_dir",
    env: "DWCP_DATA_DIR",
    flag: "data-dir",
    type: DIR,
    default: ".dwcp",
    readBy: ["CLI", "replication service"],
    help: "the `dwcp up` data dir whose credentials, trust file, roots and dwcp.toml to use",
  },
  {
    key: "cli.backup_key",
    env: "DWCP_BACKUP_KEY",
    flag: "sign-key",
    type: PATH,
    defaultText: "with `--data-dir`: `<data dir>/creds/admin.nk`",
    readBy: ["CLI"],
    secret: true,
    help: "the key file `dwcp backup` signs with",
  },
] as const satisfies readonly Setting[];

/** A declared setting's environment variable. */
export type SettingVariable = (typeof SETTINGS)[number]["env"];

/** Names the config file: `--config FILE`, else this variable, else `<data dir>/dwcp.toml` if it exists. */
export const CONFIG_VARIABLE = "DWCP_CONFIG";
export const CONFIG_FILE_NAME = "dwcp.toml";

const BY_VARIABLE: ReadonlyMap<string, Setting> = new Map(SETTINGS.map((s) => [s.env, s]));

export function settingOf(variable: SettingVariable): Setting {
  const s = BY_VARIABLE.get(variable);
  if (s === undefined) throw new Error(`no setting ${variable}`);
  return s;
}

type Env = Record<string, string | undefined>;

/**
 * A setting's text for a loader's zod schema: the flag, else the environment (into which the
 * config file has been layered, config-file.ts), else the declared default; undefined when
 * none. An empty variable counts as unset, as in a shell.
 */
export function settingInput(variable: SettingVariable, env: Env, flag?: string): string | undefined {
  if (flag !== undefined) return flag;
  const v = env[variable];
  if (v !== undefined && v !== "") return v;
  return settingOf(variable).default;
}

/** Where a setting's effective value came from. */
export type SettingSource =
  | { source: "default" }
  | { source: "file"; path: string }
  | { source: "env"; variable: string }
  | { source: "flag"; flag: string };

export interface EffectiveSetting {
  setting: Setting;
  /** The text in effect (flag, environment or file value), or the default; undefined: unset. */
  value: string | undefined;
  from: SettingSource;
}

/**
 * Every setting's effective value and its source, with file < environment < flags: `env` is the
 * environment before the file was layered in, `file` the file's values by variable, `flags` the
 * flags given by variable.
 */
export function effectiveSettings(o: {
  env: Env;
  file?: { path: string; values: Readonly<Record<string, string>> } | undefined;
  flags?: Readonly<Record<string, string>>;
}): EffectiveSetting[] {
  return SETTINGS.map((setting: Setting): EffectiveSetting => {
    const flag = o.flags?.[setting.env];
    if (flag !== undefined) return { setting, value: flag, from: { source: "flag", flag: `--${setting.flag}` } };
    const env = o.env[setting.env];
    if (env !== undefined && env !== "") return { setting, value: env, from: { source: "env", variable: setting.env } };
    const file = o.file?.values[setting.env];
    if (o.file !== undefined && file !== undefined)
      return { setting, value: file, from: { source: "file", path: o.file.path } };
    return { setting, value: setting.default, from: { source: "default" } };
  });
}

/** What a value of `type` must be, for errors and docs ("a whole number of batches from 1 to 64"). */
export function describeType(type: SettingType): string {
  switch (type.kind) {
    case "int":
      return type.oneOf
        ? `${type.oneOf.slice(0, -1).join(", ")} or ${type.oneOf.at(-1)} (${type.unit})`
        : `a whole number of ${type.unit} from ${type.min} to ${type.max}`;
    case "switch":
      return 'true or false (or "on" or "off")';
    case "enum":
      return `one of ${type.values.map((v) => `"${v}"`).join(", ")}`;
    case "text":
      return `${type.what} (1 to ${type.max} characters)`;
    case "list":
      return `an array of 1 to ${type.max} ${type.what}`;
    default: {
      const never: never = type;
      return never;
    }
  }
}

/**
 * Flags that name exactly one setting: those `dwcp config --print` takes (`--listen`, say, is the
 * mover's and the agent's, so it is not among them).
 */
export const UNIQUE_FLAGS: ReadonlyMap<string, Setting> = (() => {
  const count = new Map<string, number>();
  for (const s of SETTINGS as readonly Setting[])
    if (s.flag !== undefined) count.set(s.flag, (count.get(s.flag) ?? 0) + 1);
  return new Map(
    (SETTINGS as readonly Setting[])
      .filter((s) => s.flag !== undefined && count.get(s.flag) === 1)
      .map((s) => [s.flag as string, s]),
  );
})();
