import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface, type Interface } from "node:readline";
import { promisify } from "node:util";

const run = promisify(execFile);

/** One emulated link: round trip, rate (tbf) and random loss, the same in each direction. */
export interface WanProfile {
  name: string;
  rttMs: number;
  rateMbit: number;
  /** Per direction, per packet. */
  lossPct: number;
  /** One-way delay varies uniformly by ± this much (never reordering a direction). */
  jitterMs: number;
}

export const PROFILES = {
  metro: { name: "metro", rttMs: 10, rateMbit: 400, lossPct: 0, jitterMs: 0 },
  continental: { name: "continental", rttMs: 50, rateMbit: 200, lossPct: 0.5, jitterMs: 0 },
  intercontinental: { name: "intercontinental", rttMs: 150, rateMbit: 100, lossPct: 1, jitterMs: 0 },
} as const satisfies Record<string, WanProfile>;
export type ProfileName = keyof typeof PROFILES;

export const profileOf = (p: ProfileName | WanProfile): WanProfile => (typeof p === "string" ? PROFILES[p] : p);

export interface WanOptions {
  profile: ProfileName | WanProfile;
  /** Site names, in order; site i has the address 198.18.i.2. Default ["a", "b"]. */
  sites?: string[];
  /**
   * Join this site to the caller's namespace by a plain veth (no delay, no rate): the caller
   * reaches it at `hostLink.site` and the site reaches the caller at `hostLink.host`.
   */
  hostSite?: string;
  /**
   * The sites' default congestion control (net.ipv4.tcp_congestion_control in each site's
   * namespace; the kernel's tcp_allowed_congestion_control must list it). Default: the host's.
   */
  congestionControl?: string;
}

export interface ForwarderStats {
  forwarded: number;
  bytes: number;
  lost: number;
  overflow: number;
  cut: number;
  queued: number;
}

const PREFIX = "dwcpwan-";
const SRC = resolve(import.meta.dirname, "wanfwd.c");

export const isRoot = (): boolean => process.getuid?.() === 0;

/** Why the emulator cannot run here (undefined: it can). */
export function wanUnavailable(): string | undefined {
  if (!isRoot()) return "the WAN emulator needs root (network namespaces, TUN, tc)";
  if (!existsSync("/dev/net/tun")) return "no /dev/net/tun";
  for (const tool of ["ip", "tc", "cc"])
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `${tool} is not installed`;
    }
  return undefined;
}

/** Compiles wanfwd.c once per source version into ~/.cache/dwcp/wan/. */
export function forwarderBinary(): string {
  const src = readFileSync(SRC);
  const hash = createHash("sha256").update(src).digest("hex").slice(0, 16);
  const dir = join(process.env["DWCP_CACHE_DIR"] ?? join(homedir(), ".cache", "dwcp"), "wan");
  const bin = join(dir, `wanfwd-${hash}`);
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}`;
    execFileSync("cc", ["-O2", "-Wall", "-o", tmp, SRC], { stdio: "inherit" });
    execFileSync("mv", [tmp, bin]);
  }
  return bin;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

const netnsList = (): string[] =>
  execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter(Boolean);

/** Deletes namespaces (and their /etc/netns files) of emulators whose process is gone. */
export function cleanStale(): void {
  for (const ns of netnsList()) {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(ns);
    if (m && !alive(Number(m[1]))) removeNamespace(ns);
  }
}

function removeNamespace(ns: string): void {
  try {
    execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .forEach((pid) => {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      });
  } catch {
    // no such namespace
  }
  try {
    execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  } catch {
    // already gone
  }
  rmSync(join("/etc/netns", ns), { recursive: true, force: true });
}

/**
 * tbf for `rate`: a burst of 4 ms and at least one 64 KiB offloaded packet (a smaller one makes tbf
 * cut those into wire packets, and a timer served late on a loaded machine loses the link's
 * capacity for good), and a queue of one bandwidth-delay product (at least 256 KiB).
 */
export function tbfArgs(dev: string, p: WanProfile): string[] {
  const bytesPerSec = (p.rateMbit * 1e6) / 8;
  const burst = Math.max(65_536 + 1514, Math.round((bytesPerSec * 4) / 1000));
  const limit = Math.max(256 * 1024, Math.round((bytesPerSec * p.rttMs) / 1000));
  return [
    "qdisc",
    "replace",
    "dev",
    dev,
    "root",
    "tbf",
    "rate",
    `${p.rateMbit}mbit`,
    "burst",
    `${burst}`,
    "limit",
    `${limit}`,
  ];
}

/**
 * A packet-level emulated WAN: a namespace per site, each joined by a veth to a forwarding
 * namespace whose TUN device wanfwd drains, delays (half the RTT each way), thins (loss) and
 * refills; tbf on each veth towards a site sets the rate. See README.md.
 */
export class Wan {
  readonly sites: string[];
  readonly fwdNs: string;
  profile: WanProfile;
  private fwd!: ChildProcess;
  private replies!: Interface;
  private pending: Array<(line: string) => void> = [];
  private fwdExited!: Promise<void>;
  private hostDev?: string;

  constructor(opts: WanOptions) {
    this.sites = opts.sites ?? ["a", "b"];
    if (this.sites.length > 64) throw new Error("at most 64 sites");
    this.profile = profileOf(opts.profile);
    this.fwdNs = `${PREFIX}${process.pid}-fwd`;
    this.hostSiteName = opts.hostSite;
    this.congestionControl = opts.congestionControl;
  }

  private readonly congestionControl: string | undefined;

  private readonly hostSiteName: string | undefined;

  ns(site: string): string {
    if (!this.sites.includes(site)) throw new Error(`no site ${site}`);
    return `${PREFIX}${process.pid}-${site}`;
  }

  /** The site's address on the WAN. */
  address(site: string): string {
    return `198.18.${this.sites.indexOf(site)}.2`;
  }

  /** The plain veth between the caller and `hostSite`: addresses at each end. */
  get hostLink(): { host: string; site: string } {
    const k = process.pid % 16384;
    const base = `198.19.${k >> 6}.${(k & 63) * 4}`.split(".").map(Number);
    const at = (n: number) => `198.19.${base[2]}.${(base[3] ?? 0) + n}`;
    return { host: at(1), site: at(2) };
  }

  private async ip(ns: string | undefined, ...args: string[]): Promise<void> {
    const full = ns === undefined ? args : ["-n", ns, ...args];
    await run("ip", full);
  }

  private async sh(ns: string, cmd: string, args: string[]): Promise<void> {
    await run("ip", ["netns", "exec", ns, cmd, ...args]);
  }

  async start(): Promise<this> {
    cleanStale();
    const bin = forwarderBinary();
    const all = [this.fwdNs, ...this.sites.map((s) => this.ns(s))];
    for (const ns of all) {
      await this.ip(undefined, "netns", "add", ns);
      await this.ip(ns, "link", "set", "lo", "up");
    }
    await this.sh(this.fwdNs, "sysctl", [
      "-qw",
      "net.ipv4.ip_forward=1",
      "net.ipv4.conf.all.rp_filter=0",
      "net.ipv4.conf.default.rp_filter=0",
    ]);
    for (const [i, site] of this.sites.entries()) {
      const ns = this.ns(site);
      const fwdDev = `s${i}`;
      await this.ip(
        undefined,
        "link",
        "add",
        "wan0",
        "netns",
        ns,
        "type",
        "veth",
        "peer",
        "name",
        fwdDev,
        "netns",
        this.fwdNs,
      );
      await this.ip(ns, "addr", "add", `198.18.${i}.2/24`, "dev", "wan0");
      await this.ip(ns, "link", "set", "wan0", "up");
      if (this.congestionControl !== undefined)
        await this.sh(ns, "sysctl", ["-qw", `net.ipv4.tcp_congestion_control=${this.congestionControl}`]);
      await this.ip(ns, "route", "add", "198.18.0.0/16", "via", `198.18.${i}.1`);
      await this.ip(this.fwdNs, "addr", "add", `198.18.${i}.1/24`, "dev", fwdDev);
      await this.ip(this.fwdNs, "link", "set", fwdDev, "up");
      await this.ip(this.fwdNs, "rule", "add", "iif", fwdDev, "lookup", "100");
      // ip netns exec binds /etc/netns/<ns>/hosts over /etc/hosts: sites name each other.
      mkdirSync(join("/etc/netns", ns), { recursive: true });
      const names = this.sites.map((s) => `${this.address(s)} wan-${s}`).join("\n");
      writeFileSync(join("/etc/netns", ns, "hosts"), `127.0.0.1 localhost\n${names}\n`);
    }
    this.fwd = spawn("ip", ["netns", "exec", this.fwdNs, bin, "tun0"], { stdio: ["pipe", "pipe", "inherit"] });
    this.fwdExited = new Promise((r) => this.fwd.once("exit", () => r()));
    this.replies = createInterface({ input: this.fwd.stdout! });
    this.replies.on("line", (line) => this.pending.shift()?.(line));
    const ready = await this.reply();
    if (ready !== "ready") throw new Error(`wanfwd did not start: ${ready}`);
    // A deep queue into the forwarder: a sender's burst waits there, as on a router, rather than being
    // dropped while wanfwd waits for a CPU.
    await this.ip(this.fwdNs, "link", "set", "tun0", "up", "mtu", "1500", "txqueuelen", "20000");
    await this.sh(this.fwdNs, "sysctl", ["-qw", "net.ipv4.conf.tun0.rp_filter=0"]);
    await this.ip(this.fwdNs, "route", "add", "default", "dev", "tun0", "table", "100");
    if (this.hostSiteName !== undefined) await this.joinHost(this.hostSiteName);
    await this.setProfile(this.profile);
    return this;
  }

  private async joinHost(site: string): Promise<void> {
    const { host, site: siteAddr } = this.hostLink;
    this.hostDev = `dwh${process.pid}`.slice(0, 15);
    await this.ip(
      undefined,
      "link",
      "add",
      this.hostDev,
      "type",
      "veth",
      "peer",
      "name",
      "host0",
      "netns",
      this.ns(site),
    );
    await this.ip(undefined, "addr", "add", `${host}/30`, "dev", this.hostDev);
    await this.ip(undefined, "link", "set", this.hostDev, "up");
    await this.ip(this.ns(site), "addr", "add", `${siteAddr}/30`, "dev", "host0");
    await this.ip(this.ns(site), "link", "set", "host0", "up");
  }

  private reply(): Promise<string> {
    return new Promise((resolveLine, reject) => {
      this.pending.push(resolveLine);
      void this.fwdExited.then(() => reject(new Error("wanfwd exited")));
    });
  }

  private async control(cmd: string): Promise<string> {
    const answer = this.reply();
    this.fwd.stdin!.write(`${cmd}\n`);
    return answer;
  }

  /** Changes delay, jitter, loss and rate of every direction now. */
  async setProfile(p: ProfileName | WanProfile): Promise<void> {
    this.profile = profileOf(p);
    const { rttMs, jitterMs, lossPct } = this.profile;
    const ok = await this.control(
      `set ${Math.round(rttMs * 500)} ${Math.round(jitterMs * 1000)} ${Math.round(lossPct * 10_000)}`,
    );
    if (ok !== "ok") throw new Error(`wanfwd: ${ok}`);
    for (const i of this.sites.keys()) await run("tc", ["-n", this.fwdNs, ...tbfArgs(`s${i}`, this.profile)]);
  }

  /** A total outage: every packet in flight and every new one is dropped until heal(). */
  async cut(): Promise<void> {
    await this.control("cut");
  }

  async heal(): Promise<void> {
    await this.control("heal");
  }

  async stats(): Promise<ForwarderStats> {
    return JSON.parse(await this.control("stats")) as ForwarderStats;
  }

  /**
   * Bytes the link delivered to `site` so far (IP packets with their Ethernet header, as sent by
   * tbf on the forwarding namespace's veth towards it).
   */
  async bytesTo(site: string): Promise<number> {
    const { stdout } = await run("ip", ["-n", this.fwdNs, "-s", "-j", "link", "show", `s${this.sites.indexOf(site)}`]);
    const [dev] = JSON.parse(stdout) as Array<{ stats64: { tx: { bytes: number } } }>;
    return dev?.stats64.tx.bytes ?? 0;
  }

  /** Runs a command in the site's namespace; rejects on a non-zero exit. */
  async exec(site: string, cmd: string, args: string[], opts: { timeoutMs?: number } = {}) {
    return run("ip", ["netns", "exec", this.ns(site), cmd, ...args], {
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 64 * 1024 * 1024,
    });
  }

  /** Spawns a command in the site's namespace (its PID is the command's: ip netns exec execs it). */
  spawn(site: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return spawn("ip", ["netns", "exec", this.ns(site), cmd, ...args], opts);
  }

  /** Removes every namespace, device and file it made; stops anything still running in them. */
  async stop(): Promise<void> {
    this.fwd?.stdin?.end();
    if (this.fwd && this.fwd.exitCode === null) {
      const timer = setTimeout(() => this.fwd.kill("SIGKILL"), 2000);
      await this.fwdExited;
      clearTimeout(timer);
    }
    for (const ns of [...this.sites.map((s) => this.ns(s)), this.fwdNs]) removeNamespace(ns);
    if (this.hostDev !== undefined)
      try {
        execFileSync("ip", ["link", "del", this.hostDev], { stdio: "ignore" });
      } catch {
        // went with its peer's namespace
      }
  }
}

export async function startWan(opts: WanOptions): Promise<Wan> {
  const wan = new Wan(opts);
  try {
    return await wan.start();
  } catch (err) {
    await wan.stop();
    throw err;
  }
}
