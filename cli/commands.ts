// Every dwcp command and flag, declared once: the parser's options, `--help`, `dwcp help <command>`,
// the man page (scripts/man.ts) and shell completion (cli/completion.ts) are all made from this
// table. It imports only the settings table (which imports nothing), so that `dwcp --help` loads
// no service.
import { UNIQUE_FLAGS } from "#common/settings.js";

export interface FlagSpec {
  name: string;
  /** What the value is, in help (`SIZE`, `HOST:DIR`); none for a switch. */
  value?: string;
  /** Given more than once, each value counts. */
  multiple?: boolean;
  short?: string;
  /** The parser's default, shown in help. */
  default?: string;
  /** What help says the default is when it is not a parser default (computed, or from the environment). */
  defaultText?: string;
  help: string;
  /** Checked before the command runs: a wrong value is a usage error (exit 2) before any work. */
  check?: FlagCheck;
}

/** size: bytes with binary units; rate: a size with an optional "/s"; count: a whole number >= 1. */
export type FlagCheck = "size" | "rate" | "duration" | "port" | "count" | "file";

export interface CommandSpec {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** What follows `dwcp <name>` in the usage line. */
  usage: string;
  /** Positional arguments in the usage (`ID`, `status`); none by default. */
  positionals?: { name: string; required: boolean; choices?: readonly string[] }[];
  /** More about what it does, for help and the man page. */
  description?: string;
  flags: FlagSpec[];
  examples: string[];
  /** The NATS role it connects as (reads credentials); none for services and embedded stacks. */
  role?: "cli" | "admin" | "observer";
  /** Reads --data-dir itself too (as well as to find credentials). */
  keepsDataDir?: boolean;
  /** Reads no setting, so takes no --config (help, completion). */
  noConfig?: boolean;
}

const SIZE_UNITS = "bytes; K, M, G are KiB, MiB, GiB";
const DURATION_UNITS = "ms, s, m, h or d";

const NATS: FlagSpec = {
  name: "nats",
  value: "URL",
  defaultText: "$DWCP_NATS_URL, else nats://127.0.0.1:4222",
  help: "the NATS server(s) to talk to, comma-separated",
};
const CONNECT_TIMEOUT: FlagSpec = {
  name: "connect-timeout",
  value: "DURATION",
  check: "duration",
  defaultText: "$DWCP_CONNECT_TIMEOUT_MS, else 5s",
  help: `how long to try to reach NATS before giving up (${DURATION_UNITS})`,
};
const JSON_FLAG: FlagSpec = { name: "json", help: "print one JSON document for machines instead of text" };
const DATA_DIR_CREDS: FlagSpec = {
  name: "data-dir",
  value: "DIR",
  defaultText: "$DWCP_DATA_DIR, else .dwcp",
  help: "the stack's data dir (`dwcp up --data-dir`): its credentials D/creds, D/pki and trust file D/trust.json",
};
const CREDENTIALS: FlagSpec[] = [
  {
    name: "creds",
    value: "FILE",
    defaultText: "$DWCP_NKEY_FILE",
    help: "nkey seed file (with the three --tls-* flags)",
  },
  { name: "tls-ca", value: "FILE", defaultText: "$DWCP_TLS_CA", help: "the deployment's CA certificate (PEM)" },
  { name: "tls-cert", value: "FILE", defaultText: "$DWCP_TLS_CERT", help: "this client's certificate (PEM)" },
  { name: "tls-key", value: "FILE", defaultText: "$DWCP_TLS_KEY", help: "this client's private key (PEM)" },
];
/** The flags of every command that connects to NATS as a client. */
const CLIENT: FlagSpec[] = [NATS, CONNECT_TIMEOUT, DATA_DIR_CREDS, ...CREDENTIALS];
const HELP_FLAG: FlagSpec = { name: "help", short: "h", help: "print this help and exit; nothing else runs" };
const CONFIG_FLAG: FlagSpec = {
  name: "config",
  value: "FILE",
  check: "file",
  defaultText: "$DWCP_CONFIG, else DIR/dwcp.toml of the data dir if it exists",
  help: "the dwcp.toml to read settings from (the environment and flags win over it)",
};

const METRICS_USAGE = "[--metrics-listen HOST:PORT]";
/** A service's metrics and health listener (/metrics, /healthz, /readyz). */
const METRICS: FlagSpec[] = [
  {
    name: "metrics-listen",
    value: "HOST:PORT",
    defaultText: "$DWCP_METRICS_LISTEN, else none",
    help: "serve Prometheus metrics, /healthz and /readyz there (not loopback: needs --metrics-token-file)",
  },
  {
    name: "metrics-token-file",
    value: "FILE",
    check: "file",
    defaultText: "$DWCP_METRICS_TOKEN_FILE",
    help: "a bearer token (16+ characters) every metrics and health request must present",
  },
];

const HOSTS: FlagSpec = { name: "hosts", value: "A,B,...", default: "a,b", help: "mover host ids, comma-separated" };

export const COMMANDS: CommandSpec[] = [
  {
    name: "demo",
    summary: "start an embedded stack, migrate a generated VM image, verify it",
    usage: "[--size SIZE] [--data-dir DIR]",
    description:
      "Starts nats-server, a coordinator and movers a and b in a temporary directory (removed afterwards), " +
      "generates a sparse disk image and a 64 MiB memory image on a, migrates them to b with a progress bar " +
      "and checks them byte for byte.",
    flags: [
      {
        name: "size",
        value: "SIZE",
        default: "512M",
        check: "size",
        help: `the generated disk image's size (${SIZE_UNITS})`,
      },
      {
        name: "data-dir",
        value: "DIR",
        defaultText: "a new temporary directory, removed afterwards",
        help: "where the stack keeps its files (kept afterwards)",
      },
    ],
    examples: ["dwcp demo --size 64M"],
  },
  {
    name: "up",
    summary: "run an embedded stack in the foreground until Ctrl-C",
    usage: "[--data-dir DIR] [--hosts A,B] [--nats-port PORT] [--sites N] [--dashboard-listen HOST:PORT|off]",
    description:
      "Provisions credentials, starts nats-server (users, mTLS), a coordinator, one mover per host (root " +
      "DIR/hosts/<host>) and a replication service per host. With --sites N: N federated sites, each its own " +
      "nats-server and JetStream domain with a coordinator and movers <site>-<host>, leafnodes to a hub.",
    flags: [
      { name: "data-dir", value: "DIR", default: ".dwcp", help: "the stack's files: credentials, stores, roots, logs" },
      HOSTS,
      {
        name: "nats-port",
        value: "PORT",
        defaultText: "a free port",
        check: "port",
        help: "nats-server's client port (1-65535)",
      },
      { name: "sites", value: "N", check: "count", help: "run N federated sites (1-16) instead of one stack" },
      {
        name: "dashboard-listen",
        value: "HOST:PORT",
        default: "127.0.0.1:0",
        help: "serve the live web dashboard there (port 0: a free one; printed), or off; loopback only",
      },
    ],
    examples: ["dwcp up --data-dir /var/lib/dwcp --hosts a,b", "dwcp up --sites 3"],
  },
  {
    name: "init",
    summary: "create the streams, consumers, mover registry and work queues (as admin)",
    usage:
      "[--replicas 1|3] [--hosts A,B] [--site S --peers P,Q] | --print-config [--data-dir DIR] [--hosts A,B] " +
      "[--port PORT] [--site S --peers P,Q [--site-hosts S=A,B ...]]",
    description:
      "Idempotent. With --print-config: provisions credentials in DIR and prints the nats-server " +
      "configuration and every role's permissions, without connecting anywhere. With --site: the " +
      "deployment is site S of a federation with sites P,Q: init also creates the site's federation " +
      "log FED_S and its mirrors FEDM_P, FEDM_Q of the peers' logs (the coordinators and movers find " +
      "the peers' movers by them), and --print-config adds the federation's reads to the roles' " +
      "permissions and a leafnode user per peer site (its site-P certificate's subject) with what " +
      "may cross that site's link.",
    role: "admin",
    flags: [
      {
        name: "replicas",
        value: "N",
        default: "1",
        check: "count",
        help: "JetStream replicas of each stream (1 or 3)",
      },
      { name: "hosts", value: "A,B,...", defaultText: "none", help: "hosts whose work queues to create" },
      { name: "print-config", help: "provision credentials and print the server configuration instead" },
      {
        name: "port",
        value: "PORT",
        default: "4222",
        check: "port",
        help: "with --print-config: the client port to configure",
      },
      {
        name: "server-names",
        value: "N,...",
        defaultText: "none",
        help: "with --print-config: names or addresses the nats-servers' certificate also covers",
      },
      { name: "site", value: "S", defaultText: "none", help: "this deployment's site (its JetStream domain)" },
      { name: "peers", value: "P,...", defaultText: "none", help: "with --site: the federation's other sites" },
      {
        name: "site-hosts",
        value: "S=A,B",
        multiple: true,
        defaultText: "none",
        help: "with --print-config --site: site S's hosts, whose movers the peers' leafnode links may call",
      },
      ...CLIENT,
    ],
    examples: ["dwcp init --replicas 3 --hosts a,b --data-dir .dwcp", "dwcp init --print-config --data-dir /etc/dwcp"],
  },
  {
    name: "coordinator",
    summary: "run a coordinator until SIGTERM",
    usage: "[--replicas 1|3] [--metrics-listen HOST:PORT]",
    flags: [
      NATS,
      {
        name: "replicas",
        value: "N",
        default: "1",
        check: "count",
        help: "JetStream replicas of the streams it creates",
      },
      ...METRICS,
    ],
    examples: ["DWCP_NKEY_FILE=... dwcp coordinator --nats nats://10.0.0.1:4222"],
  },
  {
    name: "mover",
    summary: "run a mover for one host until SIGTERM (needs DWCP_SECRET)",
    usage:
      "--host ID --root DIR [--root DIR] --listen HOST:PORT [--advertise HOST] [--concurrency N] [--standby] " +
      "[--vm-state-dir DIR] " +
      METRICS_USAGE,
    flags: [
      NATS,
      { name: "host", value: "ID", help: "this host's id (required)" },
      { name: "root", value: "DIR", multiple: true, help: "a directory it may read and write (required; repeatable)" },
      { name: "listen", value: "HOST:PORT", help: "the data channel's address (required)" },
      { name: "advertise", value: "HOST", defaultText: "the --listen host", help: "the address other movers dial" },
      {
        name: "concurrency",
        value: "N",
        defaultText: "$DWCP_CONCURRENCY, else 2",
        check: "count",
        help: "work items in flight (1-64)",
      },
      { name: "replicas", value: "N", default: "1", check: "count", help: "JetStream replicas of its work queue" },
      { name: "plaintext-data", help: "data channel without TLS (a trusted test network only)" },
      {
        name: "standby",
        help:
          "serve the host's work queue beside the mover holding the host id, and take over its lease " +
          "(DWCP_LEASE_TTL_MS after its last heartbeat) when it stops",
      },
      {
        name: "vm-state-dir",
        value: "DIR",
        defaultText: "$DWCP_VM_STATE_DIR, else none: no live migrations",
        help:
          "where `dwcp vm` records this host's VMs (its --state-dir): live migrations leave from and arrive " +
          "in it; a destination directory must hold the guest's kernel and initrd at their relative paths",
      },
      ...METRICS,
    ],
    examples: ["dwcp mover --host a --root /var/lib/vms --listen 0.0.0.0:7400 --advertise 10.0.0.5"],
  },
  {
    name: "migrate",
    summary: "move a VM's disk and memory images from one host to another",
    usage:
      "--vm NAME --from HOST:PATH[,PATH[=memory]...] --to HOST:DIR [--chunk-size SIZE] [--bandwidth-limit SIZE/s] " +
      "[--streams N] [--compression MODE] [--weight N] [--priority P] [--no-verify] [--incremental] [--id ID] " +
      "[--wait] [--json] " +
      "| --live --vm NAME --from HOST --to HOST:DIR [--downtime-limit MS] [--bandwidth-limit SIZE/s] [--postcopy] " +
      "[--no-auto-converge] [--id ID] [--wait] [--json]",
    role: "cli",
    keepsDataDir: true,
    flags: [
      { name: "vm", value: "NAME", help: "the VM's name (required)" },
      {
        name: "from",
        value: "HOST:PATH,...",
        help: "source host and image paths under its root (required); a path may end in =disk or =memory",
      },
      { name: "to", value: "HOST:DIR", help: "destination host and directory under its root (required)" },
      { name: "chunk-size", value: "SIZE", default: "4M", check: "size", help: `chunk size (${SIZE_UNITS}; 64K..64M)` },
      { name: "batch-size", value: "SIZE", default: "64M", check: "size", help: `bytes per work item (${SIZE_UNITS})` },
      {
        name: "bandwidth-limit",
        value: "SIZE/s",
        check: "rate",
        defaultText: "unlimited",
        help:
          `bytes per second on the wire (${SIZE_UNITS}), e.g. 100M/s; with --live, of the RAM stream and of the ` +
          "disk mirror each",
      },
      {
        name: "streams",
        value: "N",
        check: "count",
        defaultText: "4 across a WAN (2 ms or more of RTT), else 1",
        help: "connections each batch is striped over (1-16)",
      },
      {
        name: "compression",
        value: "MODE",
        default: "auto",
        help: "chunk compression: auto (by the link's rate and spare CPU), none, lz4 or zstd",
      },
      {
        name: "weight",
        value: "N",
        default: "1",
        check: "count",
        help: "share of a link shared with migrations of equal priority (1-1000; needs DWCP_LINK_RATE on the movers)",
      },
      {
        name: "priority",
        value: "P",
        default: "0",
        help: "on a shared link, higher priorities send first (-100..100; --priority=-5 for a negative one)",
      },
      { name: "no-verify", help: "skip the destination's checksum pass" },
      {
        name: "incremental",
        help:
          "the destination may already hold an earlier copy of each image under its name: it is replaced, and only " +
          "chunks that differ from it cross the link (each chunk is still checked by BLAKE3 and CRC32C)",
      },
      {
        name: "live",
        help:
          "move the running QEMU guest --vm of the source mover (disks mirrored, RAM precopied); --from is a " +
          "host. Both movers need --vm-state-dir; on a failure or cancel the source guest runs on",
      },
      {
        name: "downtime-limit",
        value: "MS",
        check: "count",
        defaultText: "300",
        help: "with --live: longest guest pause at switchover, in ms (1-60000)",
      },
      {
        name: "postcopy",
        help:
          "with --live: when precopy stalls even with the guest throttled, switch to postcopy (the guest runs at " +
          "the destination and fetches its last pages from the source) instead of failing",
      },
      {
        name: "no-auto-converge",
        help: "with --live: when precopy stalls, do not throttle the guest's vCPUs first",
      },
      { name: "id", value: "ID", defaultText: "a new id", help: "the migration's id (must be unused)" },
      { name: "wait", help: "follow the migration to its end with progress; exit 1 unless it completes" },
      JSON_FLAG,
      ...CLIENT,
    ],
    examples: ["dwcp migrate --vm web-1 --from a:vms/web-1/disk.img,vms/web-1/mem.img=memory --to b:vms/web-1 --wait"],
  },
  {
    name: "status",
    summary: "one migration's state, or every migration's",
    usage: "[ID] [--json]",
    positionals: [{ name: "ID", required: false }],
    role: "cli",
    keepsDataDir: true,
    flags: [JSON_FLAG, ...CLIENT],
    examples: ["dwcp status", "dwcp status web-1-move --json"],
  },
  {
    name: "top",
    summary: "a live view of migrations, movers, replication and consumer lag",
    usage: "[--interval DURATION] [--once [--json]]",
    description:
      "Redraws every interval in plain ANSI (80x24 is enough, fine over ssh) until q or Ctrl-C: running and " +
      "recent migrations with a progress bar, rate, ETA and batch retries; each mover's health (its " +
      "heartbeat in dwcp_movers) and send rate (from its progress reports); each replicated VM's newest " +
      "snapshot and RPO; the coordinator's and movers' durables with num_pending and num_ack_pending. " +
      "--once prints one snapshot (measured over 1.5 s) and exits; with --json, one JSON document.",
    role: "cli",
    keepsDataDir: true,
    flags: [
      {
        name: "interval",
        value: "DURATION",
        default: "1s",
        check: "duration",
        help: `between redraws (${DURATION_UNITS}; 100ms to 1s)`,
      },
      { name: "once", help: "print one snapshot and exit" },
      JSON_FLAG,
      ...CLIENT,
    ],
    examples: ["dwcp top", "dwcp top --once --json"],
  },
  {
    name: "events",
    summary: "a migration's event log",
    usage: "ID [--json]",
    positionals: [{ name: "ID", required: true }],
    role: "cli",
    keepsDataDir: true,
    flags: [JSON_FLAG, ...CLIENT],
    examples: ["dwcp events web-1-move"],
  },
  {
    name: "dashboard",
    summary: "serve a live web dashboard of migrations, movers, replication and sites",
    usage: "[--listen HOST:PORT] [--token-file FILE]",
    description:
      "Connects as the read-only observer role (its credentials: --data-dir D finds D/creds/observer.nk and " +
      "D/pki/observer.*) and serves one page: throughput, migrations with their progress and rate and each " +
      "one's events with their stream sequences, the registered movers, each replicated VM's snapshots and " +
      "recovery point, and at a federation site the sites' health and placements, pushed once a second. " +
      "The page and its scripts are served to anyone who reaches the port; its data, off loopback, only to " +
      "requests with the token (open http://HOST:PORT/#token=TOKEN).",
    role: "observer",
    keepsDataDir: true,
    flags: [
      {
        name: "listen",
        value: "HOST:PORT",
        default: "127.0.0.1:8089",
        help: "where to serve the dashboard (not loopback: needs --token-file)",
      },
      {
        name: "token-file",
        value: "FILE",
        check: "file",
        help: "a bearer token (16+ characters) every data request must present",
      },
      ...CLIENT,
    ],
    examples: [
      "dwcp dashboard --data-dir /var/lib/dwcp",
      "dwcp dashboard --listen 0.0.0.0:8089 --token-file /etc/dwcp/dashboard.token",
    ],
  },
  {
    name: "cancel",
    summary: "cancel a migration",
    usage: "ID [--reason TEXT]",
    positionals: [{ name: "ID", required: true }],
    role: "cli",
    keepsDataDir: true,
    flags: [{ name: "reason", value: "TEXT", defaultText: "none", help: "why, recorded in its events" }, ...CLIENT],
    examples: ['dwcp cancel web-1-move --reason "maintenance window over"'],
  },
  {
    name: "migrate-set",
    summary: "change a running migration's bandwidth limit, weight or priority",
    usage: "ID [--bandwidth-limit (SIZE/s | none)] [--weight N] [--priority P]",
    positionals: [{ name: "ID", required: true }],
    description:
      "The coordinator records the change in the migration's events; the movers sending its batches " +
      "take the new values at once, and later batches carry them. `none` lifts the limit. What is not " +
      "given stays as it is.",
    role: "cli",
    keepsDataDir: true,
    flags: [
      {
        name: "bandwidth-limit",
        value: "SIZE/s|none",
        help: `the new limit in bytes per second on the wire (${SIZE_UNITS}), or none`,
      },
      { name: "weight", value: "N", check: "count", help: "the new share of a shared link (1-1000)" },
      { name: "priority", value: "P", help: "the new priority on a shared link (-100..100)" },
      ...CLIENT,
    ],
    examples: [
      "dwcp migrate-set web-1-move --bandwidth-limit 20M/s",
      "dwcp migrate-set web-1-move --bandwidth-limit none",
      "dwcp migrate-set web-1-move --weight 4 --priority 10",
    ],
  },
  {
    name: "federation",
    summary: "all sites, their health and capacity, VM placements, staleness",
    usage: "status [--json]",
    positionals: [{ name: "status", required: true, choices: ["status"] }],
    role: "cli",
    flags: [JSON_FLAG, ...CLIENT],
    examples: ["dwcp federation status --json"],
  },
  {
    name: "site",
    summary: "run site S of a federation until SIGTERM: its log, health reports, VM placements",
    usage: "--site S --peers P,Q [--signing-key FILE] [--health-interval MS] [--data-dir DIR]",
    description:
      "Runs as the admin role on site S's own server: creates the site's federation log FED_S and its " +
      "mirrors of the peers' logs and migration events, joins, reports health and capacity every " +
      "interval, and records the cross-site migrations the site's coordinators complete. It signs its log " +
      "with --signing-key (the site-S key, whose principal trust.json gives site S); every site folds an " +
      "append only when signed by a principal of the site that wrote it.",
    role: "admin",
    flags: [
      NATS,
      { name: "site", value: "S", help: "this server's site, its JetStream domain (required)" },
      { name: "peers", value: "P,...", defaultText: "none", help: "the federation's other sites" },
      {
        name: "signing-key",
        value: "FILE",
        check: "file",
        defaultText: "$DWCP_NKEY_FILE",
        help: "the nkey seed the site signs its log with",
      },
      {
        name: "health-interval",
        value: "MS",
        default: "5000",
        help: "milliseconds between health reports (0: none)",
      },
      { name: "data-dir", value: "DIR", default: ".", help: "the directory whose disk the capacity figures describe" },
    ],
    examples: ["DWCP_NKEY_FILE=admin.nk dwcp site --site east --peers west --signing-key site-east.nk"],
  },
  {
    name: "replay",
    summary: "the coordinator's view as of a time or stream sequence (read-only)",
    usage: "(--until TIME | --until-seq N) [--vm NAME] [--backup FILE] [--chunks] [--json]",
    description:
      "--backup folds a backup file instead of the live stream (a large one in parallel); --chunks keeps " +
      "each batch's chunk list in --json.",
    role: "cli",
    flags: [
      { name: "until", value: "TIME", help: "an ISO 8601 time, e.g. 2026-11-26T21:15:00Z, or now" },
      { name: "until-seq", value: "N", help: "a DWCP_EVT stream sequence" },
      { name: "vm", value: "NAME", defaultText: "all VMs", help: "only this VM's migrations" },
      { name: "backup", value: "FILE", check: "file", help: "fold this backup file instead of the live stream" },
      { name: "chunks", help: "keep each batch's chunk list in --json" },
      JSON_FLAG,
      ...CLIENT,
    ],
    examples: ["dwcp replay --until 2026-11-26T21:15:00Z --vm web-1"],
  },
  {
    name: "backup",
    summary: "export the event log, signed, to a file (as admin)",
    usage: "--out FILE [--streams DWCP_EVT[,DWCP_CMD]] [--sign-key FILE | --data-dir DIR] [--json]",
    description:
      "Exports the event log with sequences, timestamps, headers and a digest, signed with an nkey seed " +
      "(ed25519) or an HMAC secret (DWCP_BACKUP_KEY; default with --data-dir: the stack's admin key " +
      "DIR/creds/admin.nk).",
    role: "admin",
    keepsDataDir: true,
    flags: [
      { name: "out", value: "FILE", help: "the backup file to write (required)" },
      { name: "streams", value: "NAMES", default: "DWCP_EVT,DWCP_CMD", help: "streams to export, comma-separated" },
      {
        name: "sign-key",
        value: "FILE",
        check: "file",
        defaultText: "$DWCP_BACKUP_KEY, else DIR/creds/admin.nk",
        help: "an nkey seed, or an HMAC secret of 32+ bytes",
      },
      JSON_FLAG,
      ...CLIENT,
    ],
    examples: ["dwcp backup --out /backups/dwcp-$(date +%F).jsonl --data-dir .dwcp"],
  },
  {
    name: "restore-log",
    summary: "verify a backup and import it into empty dwcp streams (as admin)",
    usage:
      "--in FILE [--trust-key PUBLIC_NKEY | --hmac-key FILE | --data-dir DIR] [--allow-unsigned] " +
      "[--skip-invalid] [--replicas N] [--json]",
    description:
      "Verifies the backup's signature (DWCP_TRUST_FILE or DIR/trust.json: the admin key), streams and every " +
      "payload, then imports it into empty or absent dwcp streams created with dwcp's own configuration.",
    role: "admin",
    keepsDataDir: true,
    flags: [
      { name: "in", value: "FILE", check: "file", help: "the backup file (required)" },
      { name: "trust-key", value: "PUBLIC_NKEY", help: "the public nkey the backup must be signed by" },
      { name: "hmac-key", value: "FILE", check: "file", help: "the HMAC secret the backup must be signed with" },
      { name: "allow-unsigned", help: "import an unsigned backup (no proof of origin)" },
      { name: "skip-invalid", help: "leave out (and log) payloads that fail their schema instead of refusing" },
      {
        name: "replicas",
        value: "N",
        default: "1",
        check: "count",
        help: "JetStream replicas of the streams created (1-5)",
      },
      JSON_FLAG,
      ...CLIENT,
    ],
    examples: ["dwcp restore-log --in /backups/dwcp-2026-11-26.jsonl --data-dir .dwcp"],
  },
  {
    name: "replicate",
    summary: "incremental snapshots of a VM into a host's content-addressed store",
    usage:
      "--vm NAME --from HOST[:PATH[,PATH]] --to HOST:DIR [--every DURATION] [--keep N | --keep-for DURATION] " +
      "[--agent HOST:PORT] [--chunk-size SIZE] [--json]",
    description:
      "The source HOST's replication service takes the snapshot into DIR/.dwcp-store on the destination " +
      "(paths under its roots). With --every, one snapshot per period until Ctrl-C. With --from HOST alone, " +
      "the VM as it runs on HOST (`dwcp vm`) is read through QEMU at one point in time (fleecing), and " +
      "after the first snapshot only the blocks its dirty bitmap marks as changed.",
    role: "cli",
    keepsDataDir: true,
    flags: [
      { name: "vm", value: "NAME", help: "the VM's name (required)" },
      {
        name: "from",
        value: "HOST[:PATH,...]",
        help: "source host and image paths under its root, or the host alone for the VM running there (required)",
      },
      { name: "to", value: "HOST:DIR", help: "destination host and store directory under its root (required)" },
      {
        name: "every",
        value: "DURATION",
        defaultText: "once",
        check: "duration",
        help: `take one snapshot per period (${DURATION_UNITS})`,
      },
      { name: "keep", value: "N", defaultText: "all", check: "count", help: "keep the newest N snapshots" },
      {
        name: "keep-for",
        value: "DURATION",
        defaultText: "forever",
        check: "duration",
        help: `keep snapshots this long (${DURATION_UNITS})`,
      },
      { name: "agent", value: "HOST:PORT", help: "a replication agent serving the destination store" },
      { name: "roots", value: "HOST=DIR,...", help: "hosts' roots, for the hint when no service answers" },
      {
        name: "chunk-size",
        value: "SIZE",
        default: "4M",
        check: "size",
        help: `chunk size (${SIZE_UNITS}; multiple of 4K up to 64M)`,
      },
      {
        name: "metrics-listen",
        value: "HOST:PORT",
        defaultText: "none",
        help: "with --every: serve Prometheus metrics (the VM's recovery point) and health there",
      },
      {
        name: "metrics-token-file",
        value: "FILE",
        check: "file",
        defaultText: "none",
        help: "a bearer token (16+ characters) every metrics request must present",
      },
      JSON_FLAG,
      ...CLIENT,
    ],
    examples: [
      "dwcp replicate --vm db --from a:vms/db/disk.img --to b:replicas --every 15m --keep-for 7d",
      "dwcp replicate --vm db --from a --to b:replicas --chunk-size 64K --every 5m",
    ],
  },
  {
    name: "replication-service",
    summary: "run the source side of replication for one host until SIGTERM",
    usage: "--host HOST [--data-dir DIR | --roots HOST=DIR,...] [--metrics-listen HOST:PORT]",
    flags: [
      NATS,
      { name: "host", value: "HOST", help: "the host it serves (required)" },
      { name: "data-dir", value: "DIR", help: "a `dwcp up` data dir: roots are DIR/hosts/<host>" },
      { name: "roots", value: "HOST=DIR,...", help: "each host's root" },
      ...METRICS,
    ],
    examples: ["dwcp replication-service --host a --roots a=/var/lib/vms"],
  },
  {
    name: "replication-agent",
    summary: "serve stores DIR/<dir>/.dwcp-store to replicating sources (needs DWCP_SECRET)",
    usage: `--root DIR --listen HOST:PORT ${METRICS_USAGE}`,
    flags: [
      {
        name: "root",
        value: "DIR",
        help: "the root beneath which it keeps each --to HOST:<dir> store, <dir>/.dwcp-store (required)",
      },
      { name: "listen", value: "HOST:PORT", help: "the address it listens on (required)" },
      ...METRICS,
    ],
    examples: ["DWCP_SECRET=... dwcp replication-agent --root /srv/replicas --listen 0.0.0.0:7500"],
  },
  {
    name: "drill",
    summary: "DR drill on an embedded stack: replicate, back up, kill -9, restore; prints RPO and RTO",
    usage: "[--size SIZE] [--data-dir DIR] [--json]",
    flags: [
      { name: "size", value: "SIZE", default: "64M", check: "size", help: `the VM image's size (${SIZE_UNITS})` },
      { name: "keep", help: "keep the drill's data directory afterwards (and say where it is)" },
      {
        name: "data-dir",
        value: "DIR",
        defaultText: "a new dwcp-drill-* directory under $TMPDIR",
        help: "where the drill works",
      },
      JSON_FLAG,
    ],
    examples: ["dwcp drill --size 256M"],
  },
  {
    name: "snapshots",
    summary: "a VM's committed snapshots",
    usage: "--vm NAME [--json]",
    role: "cli",
    flags: [{ name: "vm", value: "NAME", help: "the VM's name (required)" }, JSON_FLAG, ...CLIENT],
    examples: ["dwcp snapshots --vm db"],
  },
  {
    name: "restore",
    summary: "write a VM's volumes as they were, byte-identical and sparse",
    usage: "--vm NAME (--at TIME | --snapshot ID) --to HOST:PATH [--store DIR] [--start] [--json]",
    description:
      "HOST's replication service writes them, paths under its root. With --start it then boots the VM " +
      "on HOST from the restored disks, with the definition a running VM's replication recorded in the " +
      "snapshot (kernel and initrd at the same paths under HOST's root); refused before anything is " +
      "written if the snapshot has no definition or a VM of that name runs on HOST.",
    role: "cli",
    keepsDataDir: true,
    flags: [
      { name: "vm", value: "NAME", help: "the VM's name (required)" },
      { name: "at", value: "TIME", help: "the newest snapshot taken at or before this ISO 8601 time (or now)" },
      { name: "snapshot", value: "ID", help: "this snapshot" },
      { name: "to", value: "HOST:PATH", help: "host and directory to write the volumes to (required)" },
      { name: "store", value: "DIR", defaultText: "the snapshot's store", help: "the content-addressed store to read" },
      { name: "roots", value: "HOST=DIR,...", help: "hosts' roots, for the hint when no service answers" },
      { name: "start", help: "boot the VM on HOST from the restored disks once written, fsynced and verified" },
      JSON_FLAG,
      ...CLIENT,
    ],
    examples: [
      "dwcp restore --vm db --at 2026-11-26T21:15:00Z --to a:restored/db",
      "dwcp restore --vm db --at 2026-11-26T21:15:00Z --to b:restored/db --start",
    ],
  },
  {
    name: "vm",
    summary: "start, stop, list or adopt QEMU VMs on this host",
    usage:
      "(start --definition FILE | stop NAME | list | adopt --definition FILE --qmp SOCKET) [--state-dir DIR] [--json]",
    positionals: [
      { name: "ACTION", required: true, choices: ["start", "stop", "list", "adopt"] },
      { name: "NAME", required: false },
    ],
    description:
      "A VM definition (JSON: name, root, memoryMiB, disks with paths under the root, optional kernel boot) " +
      "is started with QEMU, its disks, kernel and initrd opened beneath the root and handed to QEMU as file " +
      "descriptors. Each VM keeps its QMP socket, serial log and state under --state-dir/NAME.",
    flags: [
      { name: "definition", value: "FILE", check: "file", help: "the VM definition, JSON (start, adopt)" },
      { name: "qmp", value: "SOCKET", help: "the QMP unix socket of a VM started outside dwcp (adopt)" },
      { name: "pid", value: "N", check: "count", help: "that VM's QEMU process id, so stop can wait for it (adopt)" },
      {
        name: "state-dir",
        value: "DIR",
        defaultText: "$DWCP_DATA_DIR/vms, else .dwcp/vms",
        help: "where VMs' QMP sockets, serial logs and state live",
      },
      JSON_FLAG,
    ],
    examples: ["dwcp vm start --definition web-1.json", "dwcp vm list --json", "dwcp vm stop web-1"],
  },
  {
    name: "config",
    summary: "every setting's effective value and where it comes from",
    usage: "--print [--json] [--config FILE] [--data-dir DIR] [SETTING FLAGS]",
    description:
      "Settings come from dwcp.toml (--config FILE, else $DWCP_CONFIG, else DIR/dwcp.toml of the data dir if it " +
      "exists), under the DWCP_* environment, under flags; docs/configuration.md lists them. Each is shown with " +
      "its source: default, file PATH, env VAR or flag. Secrets, keys and token files are shown as set or unset, " +
      "never their value. The flags below are those that name one setting; they are shown as given.",
    flags: [
      { name: "print", help: "print the settings (required)" },
      JSON_FLAG,
      ...[...UNIQUE_FLAGS.values()].map(
        (s): FlagSpec => ({
          name: s.flag ?? "",
          ...(s.type.kind === "switch" ? {} : { value: "VALUE" }),
          help: `${s.key}: ${s.help.replaceAll("`", "")}`,
        }),
      ),
    ],
    examples: ["dwcp config --print", "dwcp config --print --json --config /etc/dwcp/dwcp.toml"],
  },
  {
    name: "help",
    summary: "help for dwcp or one command",
    usage: "[COMMAND]",
    positionals: [{ name: "COMMAND", required: false }],
    noConfig: true,
    flags: [],
    examples: ["dwcp help migrate"],
  },
  {
    name: "completion",
    summary: "print a shell completion script",
    usage: "bash|zsh",
    positionals: [{ name: "SHELL", required: true, choices: ["bash", "zsh"] }],
    noConfig: true,
    flags: [],
    examples: ["source <(dwcp completion bash)", "dwcp completion zsh > ~/.zfunc/_dwcp"],
  },
];

const byName = new Map(COMMANDS.map((c) => [c.name, c]));

export const commandSpec = (name: string): CommandSpec | undefined => byName.get(name);

/** Every flag of `cmd`, --config and --help included. */
export const flagsOf = (cmd: CommandSpec): FlagSpec[] => [
  ...cmd.flags,
  ...(cmd.noConfig === true ? [] : [CONFIG_FLAG]),
  HELP_FLAG,
];

/** node:util parseArgs options for `cmd`. */
export function parseOptions(
  cmd: CommandSpec,
): Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string; default?: string | boolean }> {
  return Object.fromEntries(
    flagsOf(cmd).map((f) => [
      f.name,
      {
        type: f.value === undefined ? ("boolean" as const) : ("string" as const),
        ...(f.multiple ? { multiple: true } : {}),
        ...(f.short ? { short: f.short } : {}),
        ...(f.default !== undefined ? { default: f.default } : {}),
      },
    ]),
  );
}

export const VERSION_FLAGS = ["--version", "-V"];
