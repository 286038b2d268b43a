import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { Kvm } from "@nats-io/kv";
import { MoverRegistration } from "#schemas/index.js";
import { COORDINATOR_DURABLE, CMD_STREAM, ensureLayout, ensureWorkStream, MOVERS_BUCKET } from "#common/layout.js";
import { connectNats, type Nats, type NatsCredentials } from "#common/nats.js";
import { stopChild } from "#common/child-process.js";
import { DwcpError } from "#common/errors.js";
import { freePort, startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { deploymentClusterBlock, deploymentServerConfig } from "#common/credentials/server-config.js";
import { natsCredentialsOf } from "#common/credentials/connect.js";
import { pingReplication } from "#replication";
import {
  moverRole,
  provision,
  replicationRole,
  roleEnv,
  type Provisioned,
  type Role,
} from "#common/credentials/provision.js";

import { lockDataDir } from "./data-dir-lock.js";

/** The dwcp command the stack's services run as: compiled, next to this file in dist/, or through bin/. */
export const BIN = resolve(import.meta.dirname, import.meta.url.endsWith(".ts") ? "../bin/dwcp.mjs" : "dwcp.js");

export interface ServiceProcess {
  name: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `dwcp <args>` as a child process logging to `logFile`; `prefix` runs it through another
 * command that execs it (e.g. `ip netns exec NS`), so the child's PID is still the service's.
 */
export function spawnService(
  name: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv,
  prefix: string[] = [],
): ServiceProcess {
  const fd = openSync(logFile, "a");
  // DWCP_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") reaches node itself, for profiling.
  const nodeFlags = (env["DWCP_NODE_FLAGS"] ?? "").split(" ").filter(Boolean);
  const argv = [...prefix, process.execPath, ...nodeFlags, BIN, ...args];
  const child = spawn(argv[0] ?? process.execPath, argv.slice(1), { env, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return {
    name,
    child,
    logFile,
    exited,
    stop: (signal: NodeJS.Signals = "SIGTERM") => stopChild(child, exited, signal, 15_000),
  };
}

/** A service of the embedded stack exited or did not come up in time; its log tail says why. */
export class StackStartError extends DwcpError {
  readonly code = "STACK_START_FAILED" as const;
  readonly retryable = false;
}

const tailOf = (file: string, lines = 8): string => {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
};

async function until<T>(
  what: string,
  proc: ServiceProcess | undefined,
  probe: () => Promise<T | undefined>,
  timeoutMs = 90_000, // generous: a loaded host starts tsx-compiled services slowly
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc && proc.child.exitCode !== null)
      throw new StackStartError(
        `${proc.name} exited (${proc.child.exitCode}) before ${what}:\n${tailOf(proc.logFile)}`,
      );
    const v = await probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new StackStartError(`timed out waiting for ${what}${proc ? `:\n${tailOf(proc.logFile)}` : ""}`);
}

/**
 * The movers' DWCP_SECRET: $DWCP_SECRET if set, else <dataDir>/secret (created with a random
 * secret on first use, mode 0600).
 */
export function sharedSecret(dataDir: string): string {
  const file = join(dataDir, "secret");
  if (!existsSync(file)) writeFileSync(file, randomBytes(24).toString("hex"), { mode: 0o600 });
  return process.env["DWCP_SECRET"] ?? readFileSync(file, "utf8").trim();
}

export interface StackOptions {
  dataDir: string;
  hosts: string[];
  natsPort?: number;
  /** Extra environment for the services (DWCP_NATIVE, DWCP_MAX_ATTEMPTS, ...). */
  env?: NodeJS.ProcessEnv;
  /**
   * Run on this nats-server instead of starting one (a federation site's server, see
   * cli/federated-stack.ts); `server` then stays unset and stop() leaves the server running.
   */
  natsUrl?: string;
  /**
   * DWCP_SECRET for the movers; movers that exchange data must share it.
   * Default: $DWCP_SECRET, else <dataDir>/secret.
   */
  secret?: string;
  /**
   * Start a replication service per host (`dwcp replicate` and `dwcp restore` talk to it).
   * Default true; the migration-only tests and benches leave it out.
   */
  replication?: boolean;
  /** Credentials shared with other stacks (a federation's sites: one CA for every mover). Default: <dataDir>. */
  credentials?: Provisioned;
  /**
   * Where each host's mover runs (an emulated WAN's site, test/wan/): a command prefix that execs
   * it, its --listen address and the NATS URL it reaches the server by from there. Default: here,
   * 127.0.0.1:0 and the stack's URL.
   */
  placeMover?: (host: string) => { prefix: string[]; listen: string; natsUrl: string };
  /** Extra arguments for a host's mover (`--vm-state-dir DIR`, ...). Default none. */
  moverArgs?: (host: string) => string[];
  /** How long each service may take to come up. Default 30 000 ms. */
  startTimeoutMs?: number;
  /**
   * Give each service a metrics and health listener on a free loopback port, and write their
   * addresses as Prometheus file_sd target files in <dataDir>/prometheus/ (see metricsTargets).
   * Default false; `dwcp up` turns it on.
   */
  metrics?: boolean;
  /**
   * JetStream replicas of every stream and work queue: 1 (default) runs one nats-server; 3 runs a
   * cluster of three on free loopback ports, each with its own store <dataDir>/nats/n<i>, and the
   * services connect to all three (DWCP_REPLICAS=3). Ignored with `natsUrl`.
   */
  replicas?: 1 | 3;
}

/** The Prometheus jobs of a stack's services, as the shipped alert rules name them. */
export const METRICS_JOBS = { coordinator: "dwcp-coordinator", mover: "dwcp-mover", replication: "dwcp-replication" };

/**
 * The embedded stack behind `dwcp up`, the demo, the tests and the benchmarks: a private
 * nats-server with JetStream in <dataDir>/nats, a coordinator and one mover per host with root
 * <dataDir>/hosts/<host>, all real processes.
 */
export class Stack {
  /** The stack's nats-server (the first node of its cluster with `replicas: 3`). */
  server!: NatsServerHandle;
  /** Every nats-server the stack started: one, or a cluster's three. */
  servers: NatsServerHandle[] = [];
  nats!: Nats;
  coordinators: ServiceProcess[] = [];
  movers = new Map<string, ServiceProcess>();
  replication = new Map<string, ServiceProcess>();
  readonly secret: string;
  /** The stack's CA, certificates, nkeys and trust file (<dataDir>/pki, creds, trust.json). */
  credentials!: Provisioned;
  /** Each running service's metrics address (HOST:PORT) by job and service name, with `metrics`. */
  readonly metricsTargets = new Map<string, { job: string; address: string }>();
  private readonly logs: string;
  private lock: { release(): void } | undefined;

  constructor(readonly opts: StackOptions) {
    this.logs = join(opts.dataDir, "logs");
    mkdirSync(this.logs, { recursive: true });
    this.secret = opts.secret ?? sharedSecret(opts.dataDir);
  }

  get url(): string {
    return this.opts.natsUrl ?? this.servers.map((s) => s.url).join(",");
  }

  private get replicas(): number {
    return this.opts.natsUrl === undefined ? (this.opts.replicas ?? 1) : 1;
  }

  root(host: string): string {
    return join(this.opts.dataDir, "hosts", host);
  }

  /**
   * A process's environment as `role` (a service, or the CLI as "cli"): the stack's NATS URL and
   * secret, and the credentials of its role.
   */
  env(role: Role): NodeJS.ProcessEnv {
    return {
      ...process.env,
      ...roleEnv(this.credentials, role),
      ...this.opts.env,
      DWCP_SECRET: this.secret,
      DWCP_NATS_URL: this.url,
      ...(this.replicas > 1 ? { DWCP_REPLICAS: String(this.replicas) } : {}),
    };
  }

  /** What a connection as `role` presents to the stack's server. */
  credentialsOf(role: Role): NatsCredentials {
    return natsCredentialsOf(this.credentials, role);
  }

  /** A new connection to the stack's server as `role`; the caller closes it. */
  connect(role: Role, name = `dwcp-${role}`): Promise<Nats> {
    return connectNats(this.url, name, undefined, { credentials: this.credentialsOf(role), waitOnFirstConnect: false });
  }

  async start(): Promise<this> {
    // A stack that runs its own server owns the data dir (its JetStream store) while it runs.
    if (this.opts.natsUrl === undefined)
      this.lock = lockDataDir(this.opts.dataDir, `dwcp ${process.argv.slice(2).join(" ")}`.slice(0, 200));
    this.credentials = this.opts.credentials ?? (await provision(this.opts.dataDir, { hosts: this.opts.hosts }));
    if (this.opts.natsUrl === undefined)
      this.servers = this.replicas > 1 ? await this.startCluster(this.replicas) : [await this.startServer()];
    if (this.servers[0] !== undefined) this.server = this.servers[0];
    // The stack provisions as admin what its services only check for.
    this.nats = this.servers.length > 1 ? await this.connectToCluster() : await this.connect("admin", "dwcp-stack");
    await ensureLayout(this.nats.nc, this.nats.jsm, { replicas: this.replicas });
    for (const host of this.opts.hosts) await ensureWorkStream(this.nats.jsm, host, { replicas: this.replicas });
    const replication = this.opts.replication === false ? [] : this.opts.hosts.map((h) => this.startReplication(h));
    await Promise.all([
      this.startCoordinator(),
      ...this.opts.hosts.map((h) => this.startMover(h, this.opts.moverArgs?.(h))),
      ...replication,
    ]);
    return this;
  }

  private async startServer(): Promise<NatsServerHandle> {
    const port = this.opts.natsPort || (await freePort()); // 0: any free port
    const storeDir = join(this.opts.dataDir, "nats");
    mkdirSync(storeDir, { recursive: true });
    return startNatsServer({
      configFile: join(this.opts.dataDir, "nats-server.conf"),
      config: deploymentServerConfig(this.credentials, { host: "127.0.0.1", port, storeDir }),
      port,
      logFile: join(this.logs, "nats-server.log"),
    });
  }

  /**
   * `size` nats-servers on free loopback ports routed to each other over the deployment's route
   * TLS, each with its own store dir; a node that fails to start stops the ones already started.
   */
  private async startCluster(size: number): Promise<NatsServerHandle[]> {
    const nodes: Array<{ name: string; port: number; clusterPort: number }> = [];
    for (let i = 0; i < size; i++) nodes.push({ name: `n${i}`, port: await freePort(), clusterPort: await freePort() });
    // Started together, so that each finds its routes at once.
    const started = await Promise.allSettled(
      nodes.map((n, i) => {
        const storeDir = join(this.opts.dataDir, "nats", n.name);
        mkdirSync(storeDir, { recursive: true });
        const cluster = deploymentClusterBlock(this.credentials, {
          name: "dwcp-stack",
          host: "127.0.0.1",
          port: n.clusterPort,
          routes: nodes.filter((_, j) => j !== i).map((o) => `127.0.0.1:${o.clusterPort}`),
        });
        const config = deploymentServerConfig(this.credentials, {
          host: "127.0.0.1",
          port: n.port,
          storeDir,
          serverName: n.name,
          extra: cluster,
        });
        return startNatsServer({
          name: n.name,
          configFile: join(this.opts.dataDir, `nats-server-${n.name}.conf`),
          config,
          port: n.port,
          logFile: join(this.logs, `nats-server-${n.name}.log`),
        });
      }),
    );
    const up = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = started.find((r) => r.status === "rejected");
    if (failed !== undefined) {
      await Promise.allSettled(up.map((s) => s.stop()));
      throw failed.reason;
    }
    return up;
  }

  /**
   * The admin connection to a cluster that has just started. Connecting before every node has
   * seen the JetStream meta leader elected failed after 10 s on 2.9.10 (and left the client
   * retrying); so this waits for each node's log to say so first, polling: there is no event.
   */
  private async connectToCluster(): Promise<Nats> {
    await until(
      "every node of the cluster saw a JetStream meta leader",
      undefined,
      () => {
        const seen = this.servers.every((_, i) =>
          /metadata leader/.test(tailOf(join(this.logs, `nats-server-n${i}.log`), 1_000)),
        );
        return Promise.resolve(seen ? true : undefined);
      },
      this.opts.startTimeoutMs,
    );
    return this.connect("admin", "dwcp-stack");
  }

  /** `--metrics-listen` on a free loopback port for `name` (recorded for Prometheus), or nothing. */
  private async metricsArgs(name: string, job: string): Promise<string[]> {
    if (this.opts.metrics !== true) return [];
    const address = `127.0.0.1:${await freePort()}`;
    this.metricsTargets.set(name, { job, address });
    this.writeTargets();
    return ["--metrics-listen", address];
  }

  /** <dataDir>/prometheus/<job>.json: file_sd target lists that Prometheus re-reads as they change. */
  private writeTargets(): void {
    const dir = join(this.opts.dataDir, "prometheus");
    mkdirSync(dir, { recursive: true });
    for (const job of Object.values(METRICS_JOBS)) {
      const targets = [...this.metricsTargets.values()].filter((t) => t.job === job).map((t) => t.address);
      writeFileSync(join(dir, `${job}.json`), JSON.stringify([{ targets, labels: {} }], null, 2));
    }
  }

  async startCoordinator(extraArgs: string[] = []): Promise<ServiceProcess> {
    const n = this.coordinators.length;
    const metrics = await this.metricsArgs(`coordinator-${n}`, METRICS_JOBS.coordinator);
    const proc = spawnService(
      `coordinator-${n}`,
      ["coordinator", "--nats", this.url, ...metrics, ...extraArgs],
      join(this.logs, `coordinator-${n}.log`),
      this.env("coordinator"),
    );
    this.coordinators.push(proc);
    await until(
      "the coordinator pulled commands",
      proc,
      async () => {
        const info = await this.nats.jsm.consumers.info(CMD_STREAM, COORDINATOR_DURABLE);
        return info.num_waiting > 0 ? true : undefined;
      },
      this.opts.startTimeoutMs,
    );
    return proc;
  }

  async startMover(host: string, extraArgs: string[] = []): Promise<ServiceProcess> {
    const root = this.root(host);
    mkdirSync(root, { recursive: true });
    const place = this.opts.placeMover?.(host) ?? { prefix: [], listen: "127.0.0.1:0", natsUrl: this.url };
    const args = ["mover", "--host", host, "--root", root, "--listen", place.listen, "--nats", place.natsUrl];
    const env = { ...this.env(moverRole(host)), DWCP_NATS_URL: place.natsUrl };
    const log = join(this.logs, `mover-${host}.log`);
    const metrics = await this.metricsArgs(`mover-${host}`, METRICS_JOBS.mover);
    const proc = spawnService(`mover-${host}`, [...args, ...metrics, ...extraArgs], log, env, place.prefix);
    this.movers.set(host, proc);
    const kv = await new Kvm(this.nats.nc).open(MOVERS_BUCKET);
    await until(
      `mover ${host} registered`,
      proc,
      async () => {
        const e = await kv.get(host);
        const reg = e?.operation === "PUT" ? MoverRegistration.safeParse(e.json()).data : undefined;
        return reg?.pid === proc.child.pid ? reg : undefined;
      },
      this.opts.startTimeoutMs,
    );
    return proc;
  }

  /** The host's replication service, with the stack's data dir so its roots are `root(host)`. */
  async startReplication(host: string): Promise<ServiceProcess> {
    mkdirSync(this.root(host), { recursive: true });
    const args = ["replication-service", "--host", host, "--data-dir", this.opts.dataDir, "--nats", this.url];
    const log = join(this.logs, `replication-${host}.log`);
    const metrics = await this.metricsArgs(`replication-${host}`, METRICS_JOBS.replication);
    const proc = spawnService(`replication-${host}`, [...args, ...metrics], log, this.env(replicationRole(host)));
    this.replication.set(host, proc);
    await until(`replication service ${host} answered`, proc, () =>
      pingReplication(this.nats.nc, host, { acceptTimeoutMs: 500 }).then(
        () => true,
        () => undefined,
      ),
    );
    return proc;
  }

  async stop(): Promise<void> {
    const services = [...this.movers.values(), ...this.replication.values(), ...this.coordinators];
    await Promise.allSettled(services.map((p) => p.stop()));
    await this.nats?.nc.close().catch(() => undefined);
    await Promise.allSettled(this.servers.map((s) => s.stop()));
    this.lock?.release();
    this.lock = undefined;
  }
}
