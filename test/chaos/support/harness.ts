import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, nanos } from "@nats-io/transport-node";
import { spawnService, type ServiceProcess } from "../../../cli/stack.js";
import { CMD_STREAM, ensureLayout, ensureWorkStream, EVT_STREAM, MOVER_DURABLE, workStream } from "#common/layout.js";
import { credentialOptions, type Nats, type NatsCredentials } from "#common/nats.js";
import { moverRole, provision, roleEnv, type Provisioned, type Role } from "#common/credentials/provision.js";
import { natsCredentialsOf } from "#common/credentials/connect.js";
import { NatsCluster, waitHealthy } from "./cluster.js";
import { allocPorts } from "./ports.js";
import { markedEnv, trackPid } from "./procs.js";
import { FaultProxy } from "./proxy.js";
import type { Rng } from "./seed.js";
import { serverInfo, type ServerInfo } from "./server-version.js";

/** Short timeouts so that redelivery and retries happen within a test's budget. */
export const CHAOS_ENV = {
  DWCP_ACK_WAIT_MS: "2500",
  DWCP_MAX_ATTEMPTS: "20",
  DWCP_BACKOFF_BASE_MS: "200",
  DWCP_BACKOFF_MAX_MS: "2000",
  DWCP_RPC_TIMEOUT_MS: "5000",
  // A cut data link fails its batch at once, so the scenarios that cut one see the coordinator
  // retry it; resuming within a batch is tested by the data-channel and WAN suites.
  DWCP_RESUME_WINDOW_MS: "0",
  DWCP_REPLICAS: "3",
  DWCP_LOG_LEVEL: "info",
  // The data proxy flips bits inside CHUNK frames, which it can only parse in plaintext.
  DWCP_DATA_PLAINTEXT: "on",
  // A mover's host lease lapses 3 s after its last renewal: a standby takes a killed or paused
  // mover's host over within a scenario.
  DWCP_LEASE_HEARTBEAT_MS: "1000",
} as const;

/**
 * The hosts credentials are provisioned for: a and b run movers; z has a work queue and a mover
 * role but no mover (commands.chaos.spec.ts plays one that never finishes).
 */
export const CHAOS_HOSTS = ["a", "b", "z"];

export const DWCP_STREAMS = [CMD_STREAM, EVT_STREAM, workStream("a"), workStream("b"), "KV_dwcp_movers"];

export interface Service {
  name: string;
  kind: "coordinator" | "mover";
  host?: string;
  proc: ServiceProcess;
}

export interface MoverOptions {
  concurrency?: number;
  /** Comma list of NATS URLs (default: every node). */
  nats?: string;
  /**
   * --standby: a second process of a host that already has a mover (live, stopped or killed
   * within the lease TTL); it shares the host's work queue and takes the lease over when it lapses.
   */
  standby?: boolean;
  /** Further mover flags, e.g. ["--vm-state-dir", dir] for a mover that runs live migrations. */
  args?: string[];
}

/**
 * The chaos stack: a 3-node cluster with R3 streams, secured as `dwcp up` secures its server
 * (nkey users per role with their permissions, mutual TLS on client and route links),
 * coordinators and movers as real processes (`bin/dwcp.mjs`), and a fault-injecting proxy in
 * front of host b's data channel. Mover b listens on 127.0.0.2:P and advertises 127.0.0.1:P,
 * where the proxy listens, so every batch sent to b crosses the proxy without any flag the mover
 * does not already have.
 */
export class Chaos {
  readonly services = new Map<string, Service>();
  readonly secret = randomBytes(24).toString("hex");
  cluster!: NatsCluster;
  /** As admin: provisioning, stream and consumer checks, leader step-downs, probe writes. */
  nats!: Nats;
  /** As the CLI: commands. */
  cli!: Nats;
  /** As an observer: reading the event log. */
  observer!: Nats;
  dataProxy!: FaultProxy;
  /** Run after the services and servers are gone, before the directory is removed (umount). */
  readonly beforeRemove: Array<() => void> = [];
  private dataPort = 0;
  /** Each role's NATS user, certificate and signing key, and the trust file. */
  credentials!: Provisioned;

  private constructor(
    readonly dir: string,
    readonly server: ServerInfo,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  static async start(name: string, rng: Rng, env: NodeJS.ProcessEnv = {}): Promise<Chaos> {
    const dir = mkdtempSync(join(tmpdir(), `dwcp-chaos-${name}-`));
    const c = new Chaos(dir, serverInfo(), env);
    try {
      c.credentials = await provision(join(dir, "credentials"), { hosts: CHAOS_HOSTS });
      c.cluster = await NatsCluster.start(dir, c.server, c.credentials);
      c.nats = await connectCluster(c.cluster.urls(), c.as("admin"), "chaos-admin");
      c.cli = await connectCluster(c.cluster.urls(), c.as("cli"), "chaos-cli");
      c.observer = await connectCluster(c.cluster.urls(), c.as("observer"), "chaos-observer");
      await retrying("create the dwcp streams", async () => {
        await ensureLayout(c.nats.nc, c.nats.jsm, { replicas: 3 });
        for (const host of ["a", "b"]) {
          await ensureWorkStream(c.nats.jsm, host, { replicas: 3 });
          // Services may not change a durable, so admin gives the work durables the chaos ack
          // wait here (the services' DWCP_ACK_WAIT_MS only sizes their heartbeats).
          await c.nats.jsm.consumers.update(workStream(host), MOVER_DURABLE, {
            ack_wait: nanos(Number(CHAOS_ENV.DWCP_ACK_WAIT_MS)),
          });
        }
      });
      await waitHealthy(c.nats.jsm, DWCP_STREAMS);
      [c.dataPort = 0] = await allocPorts(1, ["127.0.0.1", "127.0.0.2"]);
      c.dataProxy = await FaultProxy.start({
        name: "data b",
        listenHost: "127.0.0.1",
        listenPort: c.dataPort,
        targetHost: "127.0.0.2",
        targetPort: c.dataPort,
        sniff: true,
        rng,
      });
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  root(host: string): string {
    return join(this.dir, "hosts", host);
  }

  log(name: string): string {
    return join(this.dir, `${name}.log`);
  }

  /** What a connection as `role` presents to the cluster. */
  as(role: Role): NatsCredentials {
    return natsCredentialsOf(this.credentials, role);
  }

  /** A service's environment: the chaos settings and `role`'s credentials (NATS user, TLS, signing key). */
  serviceEnv(role: Role): NodeJS.ProcessEnv {
    return markedEnv({
      ...process.env,
      ...CHAOS_ENV,
      ...roleEnv(this.credentials, role),
      ...this.env,
      DWCP_SECRET: this.secret,
    });
  }

  service(name: string): Service {
    const s = this.services.get(name);
    if (!s) throw new Error(`no service ${name}`);
    return s;
  }

  async startCoordinator(name: string, nats = this.cluster.urls()): Promise<Service> {
    const proc = spawnService(
      name,
      ["coordinator", "--nats", nats, "--replicas", "3"],
      this.log(name),
      this.serviceEnv("coordinator"),
    );
    return this.register({ name, kind: "coordinator", proc }, /"coordinator running"/);
  }

  /** Host b listens behind the data proxy; any other host on a free loopback port. */
  async startMover(name: string, host: string, o: MoverOptions = {}): Promise<Service> {
    mkdirSync(this.root(host), { recursive: true });
    const listen =
      host === "b"
        ? ["--listen", `127.0.0.2:${this.dataPort}`, "--advertise", "127.0.0.1"]
        : ["--listen", "127.0.0.1:0"];
    const args = [
      "mover",
      "--host",
      host,
      "--root",
      this.root(host),
      ...listen,
      "--nats",
      o.nats ?? this.cluster.urls(),
      "--replicas",
      "3",
      "--concurrency",
      String(o.concurrency ?? 2),
      ...(o.standby === true ? ["--standby"] : []),
      ...(o.args ?? []),
    ];
    const proc = spawnService(name, args, this.log(name), this.serviceEnv(moverRole(host)));
    return this.register({ name, kind: "mover", host, proc }, /"mover running"/);
  }

  /** Sends a signal to a service by PID; SIGKILL also waits until it is gone. */
  async signal(name: string, sig: NodeJS.Signals): Promise<void> {
    const { proc } = this.service(name);
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
    proc.child.kill(sig);
    if (sig === "SIGKILL") await proc.exited;
  }

  alive(name: string): boolean {
    const { child } = this.service(name).proc;
    return child.exitCode === null && child.signalCode === null;
  }

  /** Count of log lines of a service that match (pino JSON: one object per line). */
  logLines(name: string, match: RegExp): string[] {
    try {
      return readFileSync(this.log(name), "utf8")
        .split("\n")
        .filter((l) => match.test(l));
    } catch {
      return [];
    }
  }

  async stop(): Promise<void> {
    await Promise.allSettled(
      [...this.services.values()].map(async (s) => {
        s.proc.child.kill("SIGCONT");
        await s.proc.stop("SIGKILL");
      }),
    );
    for (const n of [this.nats, this.cli, this.observer]) await n?.nc.close().catch(() => undefined);
    await this.dataProxy?.close().catch(() => undefined);
    await this.cluster?.stop();
    for (const fn of this.beforeRemove) fn();
    if (!process.env["DWCP_KEEP_TEST_DATA"]) rmSync(this.dir, { recursive: true, force: true });
    else process.stderr.write(`chaos: kept ${this.dir}\n`);
  }

  /**
   * A service announces readiness only in its log ("... running"), so this polls the log file
   * (50 ms) from where this process's output starts, with a deadline.
   */
  private async register(s: Service, ready: RegExp): Promise<Service> {
    trackPid(s.proc.child.pid);
    this.services.set(s.name, s);
    const deadline = Date.now() + 30_000;
    const pid = `"pid":${s.proc.child.pid ?? -1},`;
    while (Date.now() < deadline) {
      if (s.proc.child.exitCode !== null)
        throw new Error(`${s.name} exited (${s.proc.child.exitCode}):\n${tail(s.proc.logFile)}`);
      if (this.logLines(s.name, ready).some((l) => l.includes(pid))) return s;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${s.name} not running within 30 s:\n${tail(s.proc.logFile)}`);
  }
}

/** A young cluster times out or refuses placement for a while; there is no event for "ready". */
export async function retrying<T>(what: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`could not ${what} within ${timeoutMs} ms: ${(err as Error).message}`, { cause: err });
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

const tail = (file: string): string => {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-10).join("\n");
  } catch {
    return "";
  }
};

/**
 * A test-side connection to the cluster as the role of `credentials`, that survives any node
 * dying and does not need JetStream at connect time (a cluster that is still electing answers no
 * API request).
 */
export async function connectCluster(urls: string, credentials: NatsCredentials, name = "chaos-test"): Promise<Nats> {
  const nc = await connect({
    servers: urls.split(","),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
    timeout: 5_000,
    ...credentialOptions(credentials),
  });
  const jsm = await jetstreamManager(nc, { timeout: 5_000, checkAPI: false });
  const deadline = Date.now() + 30_000;
  // Polls: the meta leader's election has no event a client can wait for.
  for (;;) {
    try {
      const reply = await nc.request("$JS.API.INFO", undefined, { timeout: 1_000 });
      if (!("error" in (reply.json<object>() ?? {}))) break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new Error(`JetStream at ${urls} did not answer within 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { nc, jsm, js: jetstream(nc, { timeout: 5_000 }) };
}
