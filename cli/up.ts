import { join, resolve } from "node:path";
import { pino } from "pino";
import { siteIds } from "#federation";
import { startFederatedStack } from "./federated-stack.js";
import { Stack } from "./stack.js";
import { lockDataDir } from "./data-dir-lock.js";
import { dashboardSettings, startStackDashboard, type Dashboard } from "./dashboard/index.js";
import { UsageError } from "./args.js";
import { provision, rolesOf, type Role } from "#common/credentials/provision.js";
import { crossSiteRequesters, permissionsOf, type FederationScope } from "#common/credentials/permissions.js";
import { deploymentServerConfig, permissionsBlock } from "#common/credentials/server-config.js";

/** `dwcp up`: the embedded stack in the foreground until Ctrl-C. */
export async function runUp(opts: {
  dataDir: string;
  hosts: string[];
  natsPort?: number | undefined;
  /** HOST:PORT of the web dashboard (loopback); undefined: none. */
  dashboard?: string | undefined;
}): Promise<number> {
  // A wrong dashboard address is a usage error before anything starts.
  if (opts.dashboard !== undefined) dashboardSettings({ listen: opts.dashboard, flag: "--dashboard-listen" });
  const stack = new Stack({
    dataDir: resolve(opts.dataDir),
    hosts: opts.hosts,
    natsPort: opts.natsPort,
    metrics: true,
  });
  let dashboard: Dashboard | undefined;
  try {
    await stack.start();
    if (opts.dashboard !== undefined) dashboard = await startStackDashboard(stack, opts.dashboard);
  } catch (err) {
    await stack.stop();
    throw err;
  }
  const dir = resolve(opts.dataDir);
  process.stdout.write(
    `dwcp is up\n  NATS:    ${stack.url}   (export DWCP_NATS_URL=${stack.url})\n` +
      `  credentials: ${dir}/creds, ${dir}/pki (the CLI finds them with --data-dir ${opts.dataDir})\n` +
      opts.hosts.map((h) => `  mover ${h}: root ${stack.root(h)}\n`).join("") +
      `  metrics: ${[...stack.metricsTargets].map(([name, t]) => `${name} http://${t.address}/metrics`).join(", ")}\n` +
      `           (/healthz and /readyz beside; Prometheus file_sd targets in ${join(dir, "prometheus")})\n` +
      (dashboard ? `  dashboard: ${dashboard.url}\n` : "") +
      `  logs:    ${resolve(opts.dataDir, "logs")}\nCtrl-C stops everything.\n`,
  );
  await untilSignal();
  await stopping(async () => {
    await dashboard?.close();
    await stack.stop();
  });
  return 0;
}

/**
 * How long `up` gives its stack to stop after Ctrl-C: the services' drain grace period (10 s)
 * and the servers' shutdown. Past it, or on a second Ctrl-C, it exits at once.
 */
const STOP_GRACE_MS = 15_000;

/**
 * Runs `stop` after a Ctrl-C, bounded by STOP_GRACE_MS. A terminal's Ctrl-C reaches the whole
 * process group, so the servers and services the stack started are stopping on their own too;
 * `stop` waits for them and closes what is left. The caller exits when this returns (cli/dwcp.ts):
 * a client of a server already gone may keep retrying in the background.
 */
async function stopping(stop: () => Promise<void>): Promise<void> {
  process.stdout.write("stopping...\n");
  const force = (why: string, code: number): void => {
    process.stderr.write(`dwcp: ${why}; exiting now\n`);
    process.exit(code);
  };
  const timer = setTimeout(() => force(`not stopped within ${STOP_GRACE_MS / 1000} s`, 1), STOP_GRACE_MS);
  const again = (): void => force("interrupted again", 130);
  process.once("SIGINT", again);
  try {
    await stop();
  } finally {
    clearTimeout(timer);
    process.off("SIGINT", again);
  }
}

const untilSignal = (): Promise<void> =>
  new Promise<void>((r) => {
    process.once("SIGINT", () => r());
    process.once("SIGTERM", () => r());
  });

/**
 * `dwcp up --sites N`: N federated sites, each its own nats-server and JetStream domain with a
 * coordinator and one mover per host (hosts `<site>-<h>` for each h of --hosts).
 */
export async function runUpSites(opts: {
  dataDir: string;
  sites: number;
  hosts: string[];
  /** HOST:PORT of the web dashboard of the first site (loopback); undefined: none. */
  dashboard?: string | undefined;
}): Promise<number> {
  if (!Number.isInteger(opts.sites) || opts.sites < 1 || opts.sites > 16)
    throw new UsageError(`--sites must be a whole number from 1 to 16, got ${opts.sites}`);
  if (opts.dashboard !== undefined) dashboardSettings({ listen: opts.dashboard, flag: "--dashboard-listen" });
  const dataDir = resolve(opts.dataDir);
  const log = pino(
    { name: "dwcp", base: { svc: "federation" } },
    pino.destination({ dest: join(dataDir, "logs", "federation.log"), mkdir: true }),
  );
  const lock = lockDataDir(dataDir, `dwcp up --sites ${opts.sites}`);
  const sites = Object.fromEntries(siteIds(opts.sites).map((id) => [id, opts.hosts.map((h) => `${id}-${h}`)]));
  const fs = await startFederatedStack({ dataDir, sites, partitionable: false }, log);
  const first = fs.fed.sites[0];
  let dashboard: Dashboard | undefined;
  try {
    if (opts.dashboard !== undefined && first !== undefined)
      dashboard = await startStackDashboard(fs.stack(first.id), opts.dashboard, { federation: true });
  } catch (err) {
    await fs.stop();
    lock.release();
    throw err;
  }
  process.stdout.write(
    `dwcp federation is up (${fs.fed.topology} topology)\n` +
      fs.fed.sites
        .map(
          (s) =>
            `  site ${s.id}: ${s.url}   movers ` +
            `${(sites[s.id] ?? []).map((h) => `${h} (root ${fs.stack(s.id).root(h)})`).join(", ")}\n`,
        )
        .join("") +
      (dashboard ? `  dashboard (site ${first?.id ?? ""}): ${dashboard.url}\n` : "") +
      `  logs:    ${join(dataDir, "logs")} and ${join(dataDir, "<site>", "stack", "logs")}\n` +
      `try: DWCP_NATS_URL=${first?.url ?? ""} npx dwcp federation status\n` +
      `     a cross-site migration: publish at the source host's site, ` +
      `e.g. --from ${sites[first?.id ?? ""]?.[0] ?? ""}:PATH --to <other site>-${opts.hosts[0] ?? ""}:DIR\n` +
      `Ctrl-C stops everything.\n`,
  );
  await untilSignal();
  await stopping(async () => {
    await dashboard?.close();
    await fs.stop();
  });
  lock.release();
  return 0;
}

/**
 * `dwcp init --print-config`: provisions the credentials of a deployment in `dataDir` (kept if
 * there) and returns the nats-server config an operator installs (nkey users with their
 * permissions, TLS with client certificates) followed by each role's permission set.
 */
export async function printConfig(o: {
  dataDir: string;
  hosts: string[];
  port?: string | undefined;
  /** Further names and addresses of the nats-servers, for their certificate (multi-host deployments). */
  serverNames?: string[];
  /** The deployment is this site of a federation: the roles also get the federation's reads. */
  federation?: FederationScope | undefined;
  /** With `federation`: each site's hosts, whose movers' RPCs cross the leafnode links. */
  siteHosts?: Readonly<Record<string, readonly string[]>>;
}): Promise<string> {
  const port = o.port === undefined ? 4222 : Number(o.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new UsageError(`--port must be a TCP port, got "${o.port ?? ""}"`);
  const dir = resolve(o.dataDir);
  // A federation's site identities (site-<s>: its leafnode link's certificate, the key its site
  // service signs with), every site's each time, so that each site's run writes the same trust file.
  const sites = o.federation === undefined ? [] : [o.federation.site, ...o.federation.peers].sort();
  const p = await provision(dir, { hosts: o.hosts, serverNames: o.serverNames ?? [], sites });
  const config = deploymentServerConfig(p, {
    host: "0.0.0.0",
    port,
    storeDir: join(dir, "nats"),
    ...(o.federation !== undefined ? { federation: o.federation, leafnodes: leafnodesOf(o.federation, o) } : {}),
  });
  const roles = rolesOf({ hosts: o.hosts });
  const sets = roles.map((r) => `# ${r}\n${permissionsBlock(permissionsOf(r, roles, o.federation))}`).join("\n\n");
  return (
    `# nats-server config (credentials in ${dir}/creds and ${dir}/pki; give each service its role's files)\n` +
    `${config}\n# permission sets, per role\n${sets}`
  );
}

/**
 * The leafnode links a federation site's server accepts (used where it listens for them): each
 * peer's server, as the user its `site-<peer>` certificate maps to, with what leafPermissions
 * lets cross that link.
 */
function leafnodesOf(
  f: FederationScope,
  o: { hosts: string[]; siteHosts?: Readonly<Record<string, readonly string[]>> },
): { hosts: Record<string, string[]>; accept: string[]; requesters: Role[] } {
  const hosts = Object.fromEntries([f.site, ...f.peers].map((s) => [s, [...(o.siteHosts?.[s] ?? [])]]));
  return { hosts, accept: [...f.peers], requesters: crossSiteRequesters(rolesOf({ hosts: o.hosts })) };
}
