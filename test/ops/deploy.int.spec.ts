import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { ensureSystemUser, run } from "./ansible.js";
import { launch, type Launched } from "./launcher.js";
import { createNetns, type Netns } from "./netns.js";
import { startServiceShim, type ServiceShim } from "./service-shim.js";

// A real deployment with ops/ansible: every host of a 2-site inventory is a network namespace
// with its own address on a bridge (test/ops/netns.ts); site.yml runs with
// ansible_connection=local for every host, each installed into its own prefix (config,
// credentials, units, state); then each rendered unit's ExecStart is started inside its host's
// namespace by test/ops/launcher.ts, as the unit's user, with its environment and working
// directory. The stack is used through dwcp's CLI with the cli role's credentials, over TLS,
// from the root namespace (on the bridge too, like an operator's machine).
// The inventory is smaller than inventories/example (1 NATS server per site) to keep CI time.

const REPO = resolve(import.meta.dirname, "../..");
const BIN = join(REPO, "bin/dwcp.mjs");
const DWCP_USER = "dwcp";

const HOSTS = {
  "nats-1": { site: "site1", group: "site1_nats" },
  "coord-1": { site: "site1", group: "site1_coordinators" },
  m1a: { site: "site1", group: "site1_movers" },
  m1b: { site: "site1", group: "site1_movers" },
  "repl-1": { site: "site1", group: "site1_replication_agents" },
  "nats-2": { site: "site2", group: "site2_nats" },
  "coord-2": { site: "site2", group: "site2_coordinators" },
  m2a: { site: "site2", group: "site2_movers" },
} as const;
type Host = keyof typeof HOSTS;
/** The hosts' namespaces and addresses, created in beforeAll. */
let net: Netns | undefined;
const ip = (h: Host): string => {
  if (net === undefined) throw new Error("no network namespaces");
  return net.address(h);
};

const dir = mkdtempSync(join(tmpdir(), `dwcp-test-ops-${process.pid}-`));
// The services run as the dwcp user: they must traverse to their prefix.
chmodSync(dir, 0o755);
const prefix = (h: Host): string => join(dir, "hosts", h);
const logs = join(dir, "logs");
const creds = join(dir, "credentials");
const launched: Launched[] = [];
/** The running instance of each host's unit, by `<host>/<unit>`. */
const running = new Map<string, Launched>();
let shim: ServiceShim;
const MiB = 1024 * 1024;

function inventory(): string {
  const groups = new Map<string, string[]>();
  for (const [h, v] of Object.entries(HOSTS)) groups.set(v.group, [...(groups.get(v.group) ?? []), h]);
  const hostLine = (h: string): string => {
    const v = HOSTS[h as Host];
    return (
      `${h} ansible_host=${ip(h as Host)} dwcp_site=${v.site} dwcp_common_prefix=${prefix(h as Host)}` +
      ` dwcp_upgrade_service_command=${shim.commandFor(h)}`
    );
  };
  const sections = [...groups].map(([g, hs]) => `[${g}]\n${hs.map(hostLine).join("\n")}`);
  const parent = (name: string, kids: string[]): string => `[${name}:children]\n${kids.join("\n")}`;
  return [
    ...sections,
    parent("site1", ["site1_nats", "site1_coordinators", "site1_movers"]),
    parent("site2", ["site2_nats", "site2_coordinators", "site2_movers"]),
    parent("nats_servers", ["site1_nats", "site2_nats"]),
    parent("coordinators", ["site1_coordinators", "site2_coordinators"]),
    parent("movers", ["site1_movers", "site2_movers"]),
    parent("replication_agents", ["site1_replication_agents"]),
    "",
  ].join("\n\n");
}

const extraVars = {
  ansible_connection: "local",
  ansible_become: false,
  ansible_python_interpreter: "/usr/bin/python3",
  dwcp_credentials_dir: creds,
  dwcp_leafnode_hub_site: "site1",
  dwcp_common_manage_services: false,
  dwcp_common_install_method: "link",
  dwcp_common_source_dir: REPO,
  dwcp_common_user: DWCP_USER,
  dwcp_common_group: DWCP_USER,
  // Every host here shares one machine, so one user: created once before the run, not per host
  // (the user task would move its home to each host's prefix in turn).
  dwcp_common_manage_user: false,
  nats_server_install_method: "none",
};

async function playbook(name: string, ...extra: string[]): Promise<string> {
  const r = await run(
    "ansible-playbook",
    ["-i", join(dir, "hosts.ini"), "-e", `@${join(dir, "vars.json")}`, ...extra, "--forks", "10", name],
    { ANSIBLE_PIPELINING: "1", TMPDIR: dir },
    1_800_000,
  );
  if (r.code !== 0) throw new Error(`${name} failed (${r.code}):\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-2000)}`);
  return r.stdout;
}
const sitePlaybook = (): Promise<string> => playbook("playbooks/site.yml");

/** Starts host `h`'s unit `name` as systemd would. */
function start(h: Host, name: string): Launched {
  const l = launch(unit(h, name), logs, net?.ns(h));
  launched.push(l);
  running.set(`${h}/${name}`, l);
  return l;
}

/** The PLAY RECAP's counters per host. */
function recap(out: string): Record<string, Record<string, number>> {
  const hosts: Record<string, Record<string, number>> = {};
  for (const m of out.matchAll(/^(\S+)\s+:\s+(.*)$/gm)) {
    const counters: Record<string, number> = {};
    for (const c of (m[2] ?? "").matchAll(/(\w+)=(\d+)/g)) counters[c[1] ?? ""] = Number(c[2]);
    hosts[m[1] ?? ""] = counters;
  }
  return hosts;
}

const units = (h: Host): string[] => {
  const d = join(prefix(h), "etc/systemd/system");
  return readdirSync(d).map((f) => join(d, f));
};
const unit = (h: Host, name: string): string => join(prefix(h), "etc/systemd/system", name);

/** Resolves once `host:port` accepts a TCP connection. */
async function listening(host: string, port: number, what: Launched, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (what.child.exitCode !== null)
      throw new Error(`${what.unit.file} exited:\n${readFileSync(what.logFile, "utf8")}`);
    const ok = await new Promise<boolean>((r) => {
      const s = connect({ host, port }, () => r(s.end() !== undefined)).on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${host}:${port} did not listen`);
}

/** Resolves once `probe` holds, polling (the condition is another process's state). */
async function until(probe: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error("timed out");
}

/** A nats-server of an attacker's in the root namespace, dialling leafnode listener `at` with `cert`. */
async function rogueLeafnode(cert: string, at: string): Promise<NatsServerHandle> {
  const port = await freePort();
  const pki = join(creds, "pki");
  const config = {
    listen: `127.0.0.1:${port}`,
    leafnodes: {
      reconnect: 1,
      remotes: [
        {
          url: `nats-leaf://${at}`,
          tls: {
            cert_file: join(pki, `${cert}.pem`),
            key_file: join(pki, `${cert}.key`),
            ca_file: join(pki, "ca.pem"),
          },
        },
      ],
    },
  };
  return startNatsServer({
    name: `rogue ${cert}`,
    port,
    config: JSON.stringify(config),
    configFile: join(dir, `rogue-${cert}.conf`),
    logFile: join(logs, `rogue-${cert}.log`),
  });
}

/** Resolves with the first line of `file` after offset `from` that matches `re` (another process writes it). */
async function logLine(file: string, re: RegExp, from: number, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = readFileSync(file, "utf8")
      .slice(from)
      .split("\n")
      .find((l) => re.test(l));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no line matching ${re} in ${file}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Runs the dwcp CLI as the cli role of site `site`. */
function cli(site: "site1" | "site2", ...args: string[]): Promise<string> {
  const nats = site === "site1" ? ip("nats-1") : ip("nats-2");
  return new Promise((done, fail) =>
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: {
          ...process.env,
          DWCP_NATS_URL: `nats://${nats}:4222`,
          DWCP_NKEY_FILE: join(creds, "creds/cli.nk"),
          DWCP_TLS_CA: join(creds, "pki/ca.pem"),
          DWCP_TLS_CERT: join(creds, "pki/cli.pem"),
          DWCP_TLS_KEY: join(creds, "pki/cli.key"),
          DWCP_TRUST_FILE: join(creds, "trust.json"),
        },
        timeout: 300_000,
      },
      (err, stdout, stderr) => (err ? fail(new Error(`dwcp ${args.join(" ")}: ${stderr}${stdout}`)) : done(stdout)),
    ),
  );
}

const sha = (file: string): string => createHash("sha256").update(readFileSync(file)).digest("hex");
const root = (h: Host): string => join(prefix(h), "srv/dwcp/images");

/** Writes a random image under a mover's root, owned by the service user. */
function image(h: Host, rel: string, bytes: number): string {
  const file = join(root(h), rel);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, randomBytes(bytes));
  const { uid, gid } = statSync(root(h));
  chownSync(dirname(file), uid, gid);
  chownSync(file, uid, gid);
  return file;
}
let firstRun = "";

/** Where the migration that runs through the rolling upgrade lands. */
const upgradeTarget = (): string => join(root("m1b"), "up/disk.img");
/** Each stop the upgrade asked for, and whether that migration was still in flight then. */
const stops: { unit: string; inFlight: boolean }[] = [];

/** What the upgrade playbook's service command does on a host: stop (drain) or start a unit. */
async function serviceAction(h: Host, verb: "start" | "stop", name: string): Promise<void> {
  const key = `${h}/${name}`;
  if (verb === "start") {
    if (running.has(key)) throw new Error(`${key} is already running`);
    start(h, name);
    return;
  }
  const l = running.get(key);
  if (l === undefined) throw new Error(`${key} is not running`);
  stops.push({ unit: key, inFlight: !existsSync(upgradeTarget()) });
  running.delete(key);
  await l.stop();
}

beforeAll(async () => {
  mkdirSync(logs, { recursive: true });
  net = await createNetns(Object.keys(HOSTS));
  shim = await startServiceShim(join(dir, "svc"), (host, verb, name) => serviceAction(host as Host, verb, name));
  writeFileSync(join(dir, "hosts.ini"), inventory());
  writeFileSync(join(dir, "vars.json"), JSON.stringify(extraVars));
  expect(await ensureSystemUser(DWCP_USER)).toBe("");
  firstRun = await sitePlaybook();
}, 2_000_000);

afterAll(async () => {
  await Promise.allSettled(launched.reverse().map((l) => l.stop()));
  await shim?.close();
  await net?.remove();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe("a deployment by ops/ansible", () => {
  it("deploys every host without failure", () => {
    const r = recap(firstRun);
    for (const h of Object.keys(HOSTS)) expect(r[h]?.["failed"], h).toBe(0);
  });

  it("renders units systemd-analyze verify accepts, hardened and run as the dwcp user", async () => {
    for (const h of Object.keys(HOSTS) as Host[]) {
      for (const file of units(h)) {
        const r = await run("systemd-analyze", ["verify", "--man=no", file]);
        expect(`${file}: ${r.stderr}`).toBe(`${file}: `);
        const text = readFileSync(file, "utf8");
        for (const line of [
          "NoNewPrivileges=true",
          "ProtectSystem=strict",
          "PrivateTmp=true",
          "CapabilityBoundingSet=",
        ])
          expect(text, file).toContain(`\n${line}\n`);
        expect(text).toContain(`User=${DWCP_USER}`);
      }
    }
  }, 300_000);

  it("keeps credentials private: 0600, owned by the service user", () => {
    const key = statSync(join(prefix("m1a"), "etc/dwcp/mover-m1a/tls.key"));
    expect(key.mode & 0o777).toBe(0o600);
    const nk = statSync(join(prefix("m1a"), "etc/dwcp/mover-m1a/nkey.nk"));
    expect(nk.mode & 0o777).toBe(0o600);
    expect(nk.uid).not.toBe(0);
  });

  it("migrates within and across sites over TLS with per-role credentials, replicates, restores", async () => {
    const n1 = start("nats-1", "dwcp-nats-server.service");
    const n2 = start("nats-2", "dwcp-nats-server.service");
    await listening(ip("nats-1"), 4222, n1);
    await listening(ip("nats-2"), 4222, n2);
    // Site 2 reaches site 1 over a leafnode link with TLS both ways.
    await until(async () => {
      const leafz = (await (await fetch(`http://${ip("nats-1")}:8222/leafz`)).json()) as { leafnodes: number };
      return leafz.leafnodes === 1;
    });
    // The hub site takes a leafnode only as a peer site's link user, mapped from its site-<s>
    // certificate: a server dialling with another certificate of the CA is refused (the server
    // certificate, which routes use; site 1's own identity, which is no peer of site 1).
    for (const cert of ["nats-server", "site-site1"]) {
      const from = readFileSync(n1.logFile, "utf8").length;
      const rogue = await rogueLeafnode(cert, `${ip("nats-1")}:7422`);
      await logLine(n1.logFile, /authentication error|Authorization Violation/i, from);
      await rogue.stop();
    }
    // Each site's init: its streams, work queues, its federation log and its mirror of the other's.
    for (const c of ["coord-2", "coord-1"] as const) {
      const init = start(c, "dwcp-init.service");
      expect(await init.exited, readFileSync(init.logFile, "utf8")).toBe(0);
    }
    start("coord-1", "dwcp-coordinator.service");
    start("coord-2", "dwcp-coordinator.service");
    // Each site's federation service: its log FED_<site>, health reports, VM placements.
    const sites = [start("coord-1", "dwcp-site.service"), start("coord-2", "dwcp-site.service")];
    for (const m of ["m1a", "m1b", "m2a"] as const) {
      const mv = start(m, "dwcp-mover.service");
      start(m, "dwcp-replication.service");
      await listening(ip(m), 7400, mv);
    }

    const src = image("m1a", "vms/v1/disk.img", 8 * 1024 * 1024 + 4096);
    await cli("site1", "migrate", "--vm", "v1", "--from", "m1a:vms/v1/disk.img", "--to", "m1b:in", "--wait");
    expect(sha(join(root("m1b"), "in/disk.img"))).toBe(sha(src));

    // Across sites: requested at the source's site, bytes straight from m1a to site 2's m2a.
    await cli("site1", "migrate", "--vm", "v1", "--from", "m1a:vms/v1/disk.img", "--to", "m2a:in", "--wait");
    expect(sha(join(root("m2a"), "in/disk.img"))).toBe(sha(src));
    // Site 1's log records where v1 runs now, and each site sees the other's health reports.
    const federation = async (site: "site1" | "site2") =>
      JSON.parse(await cli(site, "federation", "status", "--json")) as {
        sites: { site: string; health: string; stale: boolean }[];
        vms: { vm: string; site: string; host?: string }[];
      };
    await until(async () => {
      const [s1, s2] = await Promise.all([federation("site1"), federation("site2")]);
      const live = (r: typeof s1) =>
        r.sites
          .filter((x) => !x.stale)
          .map((x) => x.site)
          .sort();
      return (
        live(s1).join() === "site1,site2" &&
        live(s2).join() === "site1,site2" &&
        [s1, s2].every((r) => r.vms.some((v) => v.vm === "v1" && v.site === "site2" && v.host === "m2a"))
      );
    }, 120_000);
    // Every site believed every append it folded (signed by a principal of the writing site).
    for (const l of sites) expect(readFileSync(l.logFile, "utf8")).not.toContain("not believed");

    // Another mover host's root is another machine: reached only through a replication agent.
    await expect(
      cli("site1", "replicate", "--vm", "v1", "--from", "m1a:vms/v1/disk.img", "--to", "m1b:repl"),
    ).rejects.toThrow(/m1b is not a root of the replication service on m1a/);
    await cli("site1", "replicate", "--vm", "v1", "--from", "m1a:vms/v1/disk.img", "--to", "m1a:repl", "--json");
    await cli("site1", "restore", "--vm", "v1", "--at", new Date().toISOString(), "--to", "m1a:restored");
    expect(sha(join(root("m1a"), "restored/disk.img"))).toBe(sha(src));

    // The same VM's next snapshot into the DR store of site 1's replication agent, over its TLS
    // listener: a store that holds none of the chain's chunks, so every chunk goes.
    const agent = start("repl-1", "dwcp-replication-agent.service");
    await listening(ip("repl-1"), 7500, agent);
    const agentAt = `${ip("repl-1")}:7500`;
    await cli(
      "site1",
      "replicate",
      "--vm",
      "v1",
      "--from",
      "m1a:vms/v1/disk.img",
      "--to",
      "repl-1:dr",
      "--agent",
      agentAt,
    );
    const snaps = JSON.parse(await cli("site1", "snapshots", "--vm", "v1", "--json")) as {
      destination: { host: string };
    }[];
    expect(snaps.map((x) => x.destination.host).sort()).toEqual(["m1a", "repl-1"]);
    // The chunks and manifest are in the agent's store, beneath its root.
    const stored = readdirSync(join(prefix("repl-1"), "srv/dwcp/replicas"), { recursive: true }).map(String);
    expect(stored.filter((f) => f.includes(".dwcp-store/")).length).toBeGreaterThan(1);
  }, 600_000);

  it("changes nothing on a second run", async () => {
    const r = recap(await sitePlaybook());
    for (const h of ["localhost", ...Object.keys(HOSTS)]) expect(r[h]?.["changed"], h).toBe(0);
  }, 2_000_000);

  it("upgrades one host at a time while a migration is in flight, and the migration completes", async () => {
    // 64 MiB at 1 MiB/s: the migration outlasts the restarts of the coordinator and its source
    // mover; once the upgrade is done its limit is lifted and it finishes at once.
    const src = image("m1a", "vms/v2/disk.img", 64 * MiB);
    const migration = cli(
      "site1",
      "migrate",
      "--id",
      "upgrade-v2",
      "--vm",
      "v2",
      "--from",
      "m1a:vms/v2/disk.img",
      "--to",
      "m1b:up",
      "--chunk-size",
      "1M",
      "--batch-size",
      "4M",
      "--bandwidth-limit",
      "1M/s",
      "--wait",
    );
    // In flight: the destination writes its first batch.
    await until(() => Promise.resolve(existsSync(`${upgradeTarget()}.part`)), 120_000);
    await playbook("playbooks/upgrade.yml", "-e", "dwcp_upgrade_version=0.1.1-upgrade", "--limit", "site1");
    // Unless it ended meanwhile (a slow machine's upgrade), the upgraded services take the change.
    await cli("site1", "migrate-set", "upgrade-v2", "--bandwidth-limit", "none").catch((err: unknown) => {
      if (!/already ended \(completed\)/.test(String(err))) throw err;
    });
    await migration;
    expect(sha(upgradeTarget())).toBe(sha(src));
    // Every service of every coordinator and mover host was drained and restarted, in host order,
    // the first ones while the migration ran.
    expect(stops.map((s) => s.unit)).toEqual([
      "coord-1/dwcp-coordinator.service",
      "coord-1/dwcp-site.service",
      "m1a/dwcp-mover.service",
      "m1a/dwcp-replication.service",
      "m1b/dwcp-mover.service",
      "m1b/dwcp-replication.service",
    ]);
    expect(stops.slice(0, 3).map((s) => s.inFlight)).toEqual([true, true, true]);
    for (const h of ["coord-1", "m1a", "m1b"] as const)
      expect(readlinkSync(join(prefix(h), "opt/dwcp/current"))).toBe(join(prefix(h), "opt/dwcp/0.1.1-upgrade"));
  }, 900_000);
});
