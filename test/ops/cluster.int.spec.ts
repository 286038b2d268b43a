import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { credentialOptions } from "#common/nats.js";
import { ensureSystemUser, run } from "./ansible.js";
import { launch, type Launched } from "./launcher.js";
import { createNetns, type Netns } from "./netns.js";

// The nats_server role's cluster: one site of three NATS hosts, each a network namespace with
// its own address (test/ops/netns.ts); site.yml runs with ansible_connection=local per host into
// a per-host prefix (only the credentials and NATS plays have hosts); each rendered config is
// validated with `nats-server -t -c` and each rendered unit started in its namespace
// (test/ops/launcher.ts). With the admin role's credentials (TLS + nkey), JetStream must have a
// meta leader over 3 peers and place an R3 stream on all three; a server dialling a route with a
// certificate other than nats-server's must be refused.

const REPO = resolve(import.meta.dirname, "../..");
const DWCP_USER = "dwcp";
const NATS = "/usr/sbin/nats-server";
const HOSTS = ["nats-1a", "nats-1b", "nats-1c"] as const;
type Host = (typeof HOSTS)[number];

let net: Netns | undefined;
const ip = (h: Host): string => {
  if (net === undefined) throw new Error("no network namespaces");
  return net.address(h);
};
const dir = mkdtempSync(join(tmpdir(), `dwcp-test-cluster-${process.pid}-`));
chmodSync(dir, 0o755);
const prefix = (h: Host): string => join(dir, "hosts", h);
const logs = join(dir, "logs");
const creds = join(dir, "credentials");
const launched: Launched[] = [];
/** Servers in the root namespace that dial nats-1a's route listener. */
const dialers: NatsServerHandle[] = [];
let nc: NatsConnection | undefined;
let firstRun = "";

const hostLine = (h: Host): string => `${h} ansible_host=${ip(h)} dwcp_site=site1 dwcp_common_prefix=${prefix(h)}`;
const inventory = (): string =>
  [
    `[site1_nats]\n${HOSTS.map(hostLine).join("\n")}`,
    "[site1:children]\nsite1_nats",
    "[nats_servers:children]\nsite1_nats",
    "",
  ].join("\n\n");

const extraVars = {
  ansible_connection: "local",
  ansible_become: false,
  ansible_python_interpreter: "/usr/bin/python3",
  dwcp_credentials_dir: creds,
  dwcp_common_manage_services: false,
  dwcp_common_install_method: "link",
  dwcp_common_source_dir: REPO,
  dwcp_common_user: DWCP_USER,
  dwcp_common_group: DWCP_USER,
  dwcp_common_manage_user: false,
  nats_server_install_method: "none",
  nats_server_binary: NATS,
};

const config = (h: Host): string => join(prefix(h), "etc/nats-server/nats-server.conf");
const unit = (h: Host): string => join(prefix(h), "etc/systemd/system/dwcp-nats-server.service");

/** Resolves with the first line of `file` that matches `re` (another process writes it). */
async function logLine(file: string, re: RegExp, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = readFileSync(file, "utf8")
      .split("\n")
      .find((l) => re.test(l));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no line matching ${re} in ${file}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Resolves with `probe`'s value once it is defined, polling (the state is other processes'). */
async function until<T>(probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: Error | undefined;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err instanceof Error ? err : new Error(String(err));
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out${last === undefined ? "" : `: ${last.message}`}`);
}

interface Jsz {
  meta_cluster?: { name?: string; leader?: string; cluster_size?: number };
}
const jsz = async (h: Host): Promise<Jsz> => (await fetch(`http://${ip(h)}:8222/jsz`)).json() as Promise<Jsz>;

/** A nats-server in the root namespace whose route to nats-1a presents certificate `cert` of the CA. */
async function routeDialer(cert: string): Promise<void> {
  const [port, clusterPort] = [await freePort(), await freePort()];
  const pki = join(creds, "pki");
  const d = await startNatsServer({
    name: `route dialler ${cert}`,
    port,
    config: JSON.stringify({
      listen: `127.0.0.1:${port}`,
      server_name: `dialler-${cert}`,
      cluster: {
        name: "dwcp-site1",
        // On loopback: the nodes it is gossiped to cannot dial it back.
        listen: `127.0.0.1:${clusterPort}`,
        routes: [`nats-route://${ip("nats-1a")}:6222`],
        tls: { cert_file: join(pki, `${cert}.pem`), key_file: join(pki, `${cert}.key`), ca_file: join(pki, "ca.pem") },
      },
    }),
    configFile: join(dir, `dialler-${cert}.conf`),
    logFile: join(logs, `dialler-${cert}.log`),
  });
  dialers.push(d);
}

beforeAll(async () => {
  mkdirSync(logs, { recursive: true });
  net = await createNetns(HOSTS);
  writeFileSync(join(dir, "hosts.ini"), inventory());
  writeFileSync(join(dir, "vars.json"), JSON.stringify(extraVars));
  expect(await ensureSystemUser(DWCP_USER)).toBe("");
  const r = await run(
    "ansible-playbook",
    ["-i", join(dir, "hosts.ini"), "-e", `@${join(dir, "vars.json")}`, "--forks", "3", "playbooks/site.yml"],
    { ANSIBLE_PIPELINING: "1", TMPDIR: dir },
    300_000,
  );
  if (r.code !== 0) throw new Error(`site.yml failed (${r.code}):\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-2000)}`);
  firstRun = r.stdout;
  for (const h of HOSTS) launched.push(launch(unit(h), logs, net.ns(h)));
  await Promise.all(launched.map((l) => logLine(l.logFile, /Server is ready/)));
  const admin = credentialOptions({
    role: "admin",
    nkeyFile: join(creds, "creds/admin.nk"),
    caFile: join(creds, "pki/ca.pem"),
    certFile: join(creds, "pki/admin.pem"),
    keyFile: join(creds, "pki/admin.key"),
  });
  nc = await connect({ servers: `nats://${ip("nats-1b")}:4222`, ...admin, timeout: 20_000 });
}, 400_000);

afterAll(async () => {
  await nc?.close().catch(() => undefined);
  await Promise.allSettled(dialers.map((d) => d.stop()));
  await Promise.allSettled(launched.map((l) => l.stop()));
  await net?.remove();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe("the nats_server role's 3-node cluster", () => {
  it("renders a config per host that nats-server -t accepts, routing to the two other nodes", async () => {
    for (const h of HOSTS)
      expect(firstRun).toMatch(new RegExp(`^${h}\\s+:\\s+ok=\\d+.*\\sunreachable=0\\s+failed=0\\s`, "m"));
    for (const h of HOSTS) {
      const r = await run(NATS, ["-t", "-c", config(h)]);
      expect(`${h}: ${r.code} ${r.stderr}`).toMatch(new RegExp(`^${h}: 0 `));
      const text = readFileSync(config(h), "utf8");
      const routes = HOSTS.filter((o) => o !== h).map((o) => `nats-route://${ip(o)}:6222`);
      const rendered = /^\s*routes: (\[.*\])$/m.exec(text)?.[1];
      expect(JSON.parse(rendered ?? "null")).toEqual(routes);
      expect(text).toContain(`listen: "${ip(h)}:6222"`);
    }
  }, 60_000);

  it("forms one JetStream meta group of 3 peers with a leader that every node agrees on", async () => {
    const leaders = await Promise.all(
      HOSTS.map((h) =>
        until(async () => {
          const m = (await jsz(h)).meta_cluster;
          return m?.leader !== undefined && m.leader !== "" && m.cluster_size === 3 ? m : undefined;
        }),
      ),
    );
    expect(new Set(leaders.map((m) => m.leader)).size).toBe(1);
    expect(HOSTS as readonly string[]).toContain(leaders[0]?.leader);
    expect(leaders[0]?.name).toBe("dwcp-site1");
  }, 60_000);

  it("places an R3 stream, created with the admin role's credentials, on all three nodes", async () => {
    if (nc === undefined) throw new Error("no connection");
    const jsm = await jetstreamManager(nc);
    const info = await jsm.getAccountInfo();
    expect(info.domain).toBe("site1");
    await jsm.streams.add({ name: "CLUSTER_PROOF", subjects: ["cluster.proof"], num_replicas: 3 });
    const si = await until(async () => {
      const s = await jsm.streams.info("CLUSTER_PROOF");
      const replicas = s.cluster?.replicas ?? [];
      return s.cluster?.leader !== undefined && replicas.length === 2 && replicas.every((r) => r.current)
        ? s
        : undefined;
    });
    expect(si.config.num_replicas).toBe(3);
    const nodes = [si.cluster?.leader, ...(si.cluster?.replicas ?? []).map((r) => r.name)].sort();
    expect(nodes).toEqual([...HOSTS]);
    await jsm.streams.delete("CLUSTER_PROOF");
  }, 60_000);

  it("refuses a route from a server that presents another certificate of the CA, accepts nats-server's", async () => {
    const target = launched[0]?.logFile ?? "";
    // The root namespace (where the dialling servers run) is .254 of the hosts' /24.
    const root = ip("nats-1a").replace(/\.\d+$/, ".254");
    const from = root.replaceAll(".", "\\.");
    await routeDialer("cli");
    await logLine(target, new RegExp(`\\[ERR\\] ${from}:\\d+ - rid:\\d+ - authentication error`));
    const routez = async (): Promise<Set<string | undefined>> => {
      const r = (await (await fetch(`http://${ip("nats-1a")}:8222/routez`)).json()) as { routes?: { ip?: string }[] };
      return new Set((r.routes ?? []).map((x) => x.ip));
    };
    // The cluster keeps its three nodes: the rogue is no peer.
    expect(await routez()).toEqual(new Set([ip("nats-1b"), ip("nats-1c")]));
    // The control: the same server with the nats-server certificate does open a route.
    await routeDialer("nats-server");
    await until(async () => ((await routez()).has(root) ? true : undefined));
  }, 60_000);
});
