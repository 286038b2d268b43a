import type { ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { startNatsServer } from "#common/nats-server.js";
import type { Provisioned } from "#common/credentials/provision.js";
import { authorizationBlock, deploymentClusterBlock, tlsBlock, usersOf } from "#common/credentials/server-config.js";
import { basename, join } from "node:path";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { allocPorts } from "./ports.js";
import { FaultProxy } from "./proxy.js";
import { markedEnv, trackPid } from "./procs.js";
import type { ServerInfo } from "./server-version.js";

interface NodeSpec {
  name: string;
  port: number;
  clusterPort: number;
  httpPort: number;
  conf: string;
  log: string;
}

/**
 * A 3-node JetStream cluster on loopback, secured as `dwcp up` secures its server: the
 * deployment's nkey users with their permissions (no anonymous client), client TLS verified
 * against its CA, and routes over TLS that only the nats-server certificate may open. Every
 * route between two nodes runs through a FaultProxy of its own (node i dials node j only via
 * proxy i→j; the advertised cluster address is a closed port so no node learns a direct path),
 * which is how a node is partitioned while it keeps serving its own clients; the proxies pass
 * the TLS bytes through untouched. Nodes are killed and restarted by PID with the same config
 * and store.
 */
export class NatsCluster {
  readonly nodes: NodeSpec[] = [];
  private readonly procs: Array<ChildProcess | undefined> = [];
  private readonly routes = new Map<string, FaultProxy>();

  private constructor(
    readonly dir: string,
    readonly server: ServerInfo,
    readonly credentials: Provisioned,
  ) {}

  static async start(dir: string, server: ServerInfo, credentials: Provisioned, size = 3): Promise<NatsCluster> {
    const c = new NatsCluster(dir, server, credentials);
    const ports = await allocPorts(3 * size + size * (size - 1));
    const take = (): number => ports.pop() ?? 0;
    for (let i = 0; i < size; i++) {
      c.nodes.push({
        name: `n${i}`,
        port: take(),
        clusterPort: take(),
        httpPort: take(),
        conf: join(dir, `n${i}.conf`),
        log: join(dir, `n${i}.log`),
      });
    }
    for (const [i, from] of c.nodes.entries()) {
      for (const [j, to] of c.nodes.entries()) {
        if (i === j) continue;
        c.routes.set(
          `${i}>${j}`,
          await FaultProxy.start({
            name: `route ${from.name}>${to.name}`,
            listenHost: "127.0.0.1",
            listenPort: take(),
            targetHost: "127.0.0.1",
            targetPort: to.clusterPort,
          }),
        );
      }
    }
    for (let i = 0; i < size; i++) c.writeConfig(i);
    try {
      await Promise.all(c.nodes.map((_, i) => c.startNode(i)));
      await c.waitMeta();
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  url(i: number): string {
    return `nats://127.0.0.1:${this.node(i).port}`;
  }

  /** Comma-separated URLs of the given nodes (default all), as `--nats` takes them. */
  urls(only: number[] = this.nodes.map((_, i) => i)): string {
    return only.map((i) => this.url(i)).join(",");
  }

  indexOf(serverName: string | undefined): number {
    return this.nodes.findIndex((n) => n.name === serverName);
  }

  isUp(i: number): boolean {
    const p = this.procs[i];
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  pid(i: number): number | undefined {
    return this.procs[i]?.pid;
  }

  async startNode(i: number): Promise<void> {
    const n = this.node(i);
    await Promise.all(this.routesTo(i).map((p) => p.resume()));
    await startNatsServer({
      name: n.name,
      configFile: n.conf,
      port: n.port,
      logFile: n.log,
      bin: this.server.bin,
      env: markedEnv(),
      onSpawn: (child) => {
        trackPid(child.pid);
        this.procs[i] = child;
      },
    });
  }

  /**
   * kill -<signal> node i and wait until it is gone (SIGKILL by default: no shutdown path). Its
   * peers' routes to it are then refused, as a dead process's port is, until startNode(i).
   */
  async kill(i: number, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const p = this.procs[i];
    if (p === undefined || !this.isUp(i)) return;
    const gone = new Promise<void>((r) => p.once("exit", () => r()));
    p.kill(signal);
    await gone;
    await Promise.all(this.routesTo(i).map((r) => r.suspend()));
  }

  /** Cut every route to and from node i; it keeps serving its clients, who get no JetStream. */
  partition(i: number): void {
    for (const [key, proxy] of this.routes) if (key.split(">").includes(String(i))) proxy.cut();
  }

  heal(i: number): void {
    for (const [key, proxy] of this.routes) if (key.split(">").includes(String(i))) proxy.heal();
  }

  /**
   * Waits until the JetStream meta group has a leader and every peer is current (streams can be
   * placed on 3 peers only then). Polls /jsz of a live node: there is no event for it.
   */
  async waitMeta(timeoutMs = 30_000): Promise<number> {
    const started = Date.now();
    let last = "";
    while (Date.now() - started < timeoutMs) {
      type Jsz = { meta_cluster?: { leader?: string; replicas?: Array<{ current?: boolean; offline?: boolean }> } };
      try {
        // Only the meta leader lists its peers.
        const any = await this.monitor<Jsz>(
          this.nodes.findIndex((_, k) => this.isUp(k)),
          "jsz",
        );
        const leader = this.indexOf(any.meta_cluster?.leader);
        const meta =
          leader >= 0 && this.isUp(leader) ? (await this.monitor<Jsz>(leader, "jsz")).meta_cluster : undefined;
        const current = (meta?.replicas ?? []).filter((r) => r.current === true && r.offline !== true).length;
        if (meta?.leader && current >= this.nodes.filter((_, k) => this.isUp(k)).length - 1)
          return Date.now() - started;
        last = `leader ${meta?.leader ?? "none"}, ${current} current peers`;
      } catch (err) {
        last = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`JetStream meta group not ready within ${timeoutMs} ms: ${last}`);
  }

  /** The monitoring endpoint's JSON (e.g. "jsz", "varz") of node i. */
  async monitor<T>(i: number, path: string): Promise<T> {
    const res = await fetch(`http://127.0.0.1:${this.node(i).httpPort}/${path}`);
    return (await res.json()) as T;
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.nodes.map((_, i) => this.kill(i, "SIGKILL")));
    await Promise.allSettled([...this.routes.values()].map((p) => p.close()));
  }

  /** The route proxies other nodes dial to reach node i. */
  private routesTo(i: number): FaultProxy[] {
    return [...this.routes].filter(([key]) => key.split(">")[1] === String(i)).map(([, p]) => p);
  }

  private node(i: number): NodeSpec {
    const n = this.nodes[i];
    if (n === undefined) throw new RangeError(`no node ${i}`);
    return n;
  }

  private writeConfig(i: number): void {
    const n = this.node(i);
    const store = join(this.dir, n.name, "jetstream");
    mkdirSync(store, { recursive: true });
    const routes = this.nodes
      .map((_, j) => j)
      .filter((j) => j !== i)
      .map((j) => `127.0.0.1:${this.routes.get(`${i}>${j}`)?.port ?? 0}`);
    // 2.9 acknowledges before fsync (sync every 2 min, not configurable); from 2.10 every write
    // is fsynced before its ack.
    const sync = this.server.features.syncInterval ? ["  sync_interval: always"] : [];
    const p = this.credentials;
    const tls = { certFile: p.server.certFile, keyFile: p.server.keyFile, caFile: p.caFile };
    writeFileSync(
      n.conf,
      [
        `server_name: "${n.name}"`,
        `listen: "127.0.0.1:${n.port}"`,
        `http: "127.0.0.1:${n.httpPort}"`,
        "jetstream {",
        `  store_dir: "${store}"`,
        "  max_memory_store: 268435456",
        "  max_file_store: 4294967296",
        ...sync,
        "}",
        tlsBlock("tls", tls),
        authorizationBlock(usersOf(p)),
        deploymentClusterBlock(p, {
          name: "dwcp-chaos",
          host: "127.0.0.1",
          port: n.clusterPort,
          routes,
          advertise: "127.0.0.1:1",
          noAdvertise: true,
        }),
        "",
      ].join("\n"),
    );
  }
}

/**
 * Waits until JetStream answers and every named stream has a leader and current replicas.
 * There is no event for "the cluster has settled", so this polls the API with a deadline.
 */
/** Whether `name` leads `stream` or is a current replica of it within `timeoutMs` (polled). */
export async function waitCurrent(
  jsm: JetStreamManager,
  stream: string,
  name: string,
  timeoutMs: number,
): Promise<boolean> {
  const started = Date.now();
  for (;;) {
    const info = await jsm.streams.info(stream).catch(() => undefined);
    const cl = info?.cluster;
    if (cl?.leader === name || cl?.replicas?.find((r) => r.name === name)?.current === true) return true;
    if (Date.now() - started >= timeoutMs) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface HealthOptions {
  /**
   * Enough that each stream has a leader and a quorum of current replicas (it takes writes and
   * serves reads), not every follower caught up.
   */
  quorum?: boolean;
  /** nats-server logs whose lines about the stream that stayed unhealthy go into the timeout's error. */
  logs?: readonly string[];
}

export async function waitHealthy(
  jsm: JetStreamManager,
  streams: string[],
  timeoutMs = 60_000,
  replicas = 3,
  opts: HealthOptions = {},
): Promise<number> {
  const started = Date.now();
  const needed = opts.quorum === true ? Math.floor(replicas / 2) : replicas - 1;
  let last = "";
  let lastStream: string | undefined;
  while (Date.now() - started < timeoutMs) {
    try {
      await jsm.getAccountInfo();
      let ok = true;
      for (const name of streams) {
        const info = await jsm.streams.info(name);
        const cl = info.cluster;
        const current = (cl?.replicas ?? []).filter((r) => r.current).length;
        if (!cl?.leader || current < needed) {
          ok = false;
          last = `${name}: leader ${cl?.leader ?? "none"}, ${current} current followers`;
          lastStream = name;
          break;
        }
      }
      if (ok) return Date.now() - started;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const lines = lastStream === undefined ? [] : logLinesAbout(opts.logs ?? [], lastStream);
  throw new Error(`cluster not healthy within ${timeoutMs} ms: ${last}${lines.length ? `\n${lines.join("\n")}` : ""}`);
}

/** The followers of each stream that are not current, as "STREAM: n1, n2"; empty when all are. */
export async function laggingFollowers(jsm: JetStreamManager, streams: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const name of streams) {
    const lagging = ((await jsm.streams.info(name)).cluster?.replicas ?? []).filter((r) => !r.current);
    if (lagging.length > 0) out.push(`${name}: ${lagging.map((r) => `${r.name} (${r.lag ?? "?"} behind)`).join(", ")}`);
  }
  return out;
}

/**
 * The last lines of each log (a missing one skipped) that name `stream` or tell of a replica's
 * recovery (catch-up, reset, snapshot, mismatch, quorum), prefixed by the log's name.
 */
function logLinesAbout(logs: readonly string[], stream: string, keep = 15): string[] {
  return logs.flatMap((log) => {
    let text: string;
    try {
      text = readFileSync(log, "utf8");
    } catch {
      return [];
    }
    const name = basename(log);
    return text
      .split("\n")
      .filter((l) => l.includes(stream) || /catch-?up|reset|snapshot|mismatch|quorum/i.test(l))
      .slice(-keep)
      .map((l) => `${name}: ${l}`);
  });
}

export async function streamLeader(jsm: JetStreamManager, stream: string): Promise<string | undefined> {
  return (await jsm.streams.info(stream)).cluster?.leader;
}

/** Asks the leader of a stream (or of a durable consumer) to step down; a new one is elected. */
export async function stepDown(nc: NatsConnection, stream: string, consumer?: string): Promise<void> {
  const subject = consumer
    ? `$JS.API.CONSUMER.LEADER.STEPDOWN.${stream}.${consumer}`
    : `$JS.API.STREAM.LEADER.STEPDOWN.${stream}`;
  await nc.request(subject, undefined, { timeout: 5_000 });
}
