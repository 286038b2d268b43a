import type { Nats, NatsCredentials } from "#common/nats.js";
import { EventVerifier, type EventTrust } from "#common/signing.js";
import { readMigration } from "../client.js";
import type { Stack } from "../stack.js";
import { Collector, type DashboardSnapshot, type ReplicationView } from "./collector.js";
import { dashboardSettings, startDashboardServer, type DashboardServer, type DashboardSettings } from "./server.js";

export { dashboardSettings, type DashboardSettings } from "./server.js";
export type { DashboardSnapshot } from "./collector.js";

/** How often a snapshot is taken and pushed to the open pages. */
const TICK_MS = 1_000;

export interface Dashboard extends DashboardServer {
  /** The next snapshot taken (for tests and tools that wait for one). */
  next(): Promise<DashboardSnapshot>;
}

/**
 * The live dashboard: a collector reading NATS once a second (as the connection's role, the
 * read-only observer) and the HTTP server that pushes each snapshot to the open pages. Closing it
 * stops both; the caller closes `nats`.
 */
export async function startDashboard(o: {
  nats: Nats;
  trust: EventTrust;
  settings: DashboardSettings;
  /** The federation's report at a federation site (see federationStatus). */
  federation?: () => Promise<unknown>;
  onError?: (err: unknown) => void;
}): Promise<Dashboard> {
  const { readReplicationChecked } = await import("#replication");
  const replication = async (vm: string): Promise<ReplicationView> => {
    const { state } = await readReplicationChecked(o.nats, vm, o.trust);
    return {
      vm,
      rpoSeconds: undefined,
      snapshots: state.snapshots.map((s) => ({
        id: s.snapshotId,
        takenAt: s.takenAt,
        bytes: s.bytes,
        changedBytes: s.changedBytes,
        wireBytes: s.wireBytes,
      })),
    };
  };
  const collector = new Collector({ nats: o.nats, trust: o.trust, replication, federation: o.federation });
  const listeners = new Set<(s: DashboardSnapshot) => void>();
  let latest: DashboardSnapshot | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async (): Promise<void> => {
    try {
      latest = await collector.collect();
      for (const l of [...listeners]) l(latest);
    } catch (err) {
      o.onError?.(err);
    }
    if (!stopped) timer = setTimeout(() => void tick(), TICK_MS);
  };
  const server = await startDashboardServer(o.settings, {
    latest: () => latest,
    subscribe: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    migration: async (id) => {
      const { state, events } = await readMigration(o.nats, id, o.trust);
      if (events.length === 0) return undefined;
      return {
        id,
        state: state.status,
        events: events.map((e) => ({
          seq: e.seq,
          type: e.event.type,
          at: e.event.at,
          ...("batch" in e.event ? { batch: e.event.batch } : {}),
          ...("reason" in e.event && e.event.reason ? { reason: e.event.reason } : {}),
          ...("code" in e.event ? { code: e.event.code } : {}),
        })),
      };
    },
  });
  void tick();
  return {
    ...server,
    next: () =>
      new Promise<DashboardSnapshot>((resolve) => {
        const once = (s: DashboardSnapshot): void => {
          listeners.delete(once);
          resolve(s);
        };
        listeners.add(once);
      }),
    close: async () => {
      stopped = true;
      clearTimeout(timer);
      collector.stop();
      await server.close();
    },
  };
}

/** `dwcp dashboard`: serves the dashboard of the stack at `natsUrl` until Ctrl-C. */
export async function runDashboard(o: {
  natsUrl: string;
  listen: string;
  tokenFile?: string | undefined;
  dataDir?: string | undefined;
  out: (s: string) => void;
}): Promise<number> {
  const settings = dashboardSettings({ listen: o.listen, tokenFile: o.tokenFile });
  const { cliEventTrust } = await import("../client.js");
  const trust = cliEventTrust(o.dataDir);
  const { connectNats } = await import("#common/nats.js");
  const nats = await connectNats(o.natsUrl, "dwcp-dashboard");
  const federation = await federationReader(nats, o.natsUrl);
  const dashboard = await startDashboard({
    nats,
    trust,
    settings,
    ...(federation ? { federation } : {}),
    onError: (err) => process.stderr.write(`dwcp: dashboard: ${(err as Error).message}\n`),
  });
  o.out(
    `dashboard: ${dashboard.url}` +
      (settings.token === undefined ? "" : "#token=<the token file's contents> (data needs the bearer token)") +
      "\nCtrl-C stops it.",
  );
  await new Promise<void>((r) => {
    process.once("SIGINT", () => r());
    process.once("SIGTERM", () => r());
  });
  await dashboard.close();
  await nats.nc.close();
  return 0;
}

/** At a federation site (its JetStream has a domain), a reader of the federation's report. */
export async function federationReader(
  nats: Nats,
  natsUrl: string,
  credentials?: NatsCredentials,
): Promise<(() => Promise<unknown>) | undefined> {
  const domain = await nats.jsm
    .getAccountInfo()
    .then((i) => i.domain)
    .catch(() => undefined);
  if (!domain) return undefined;
  const { federationStatus } = await import("#federation");
  return async () =>
    JSON.parse(await federationStatus(natsUrl, { json: true, ...(credentials ? { credentials } : {}) })) as unknown;
}

/**
 * The dashboard of an embedded stack (`dwcp up`), connected as its observer and verifying events
 * against its trust file; at a federation site with the federation's report. Closing it closes its
 * connection too.
 */
export async function startStackDashboard(
  stack: Stack,
  listen: string,
  opts: { federation?: boolean } = {},
): Promise<Dashboard> {
  const settings = dashboardSettings({ listen, flag: "--dashboard-listen" });
  const nats = await stack.connect("observer", "dwcp-dashboard");
  try {
    const trust: EventTrust = { insecure: false, verifier: EventVerifier.fromTrustFile(stack.credentials.trustFile) };
    const federation = opts.federation
      ? await federationReader(nats, stack.url, stack.credentialsOf("observer"))
      : undefined;
    const dashboard = await startDashboard({ nats, trust, settings, ...(federation ? { federation } : {}) });
    return {
      ...dashboard,
      close: async () => {
        await dashboard.close();
        await nats.nc.close();
      },
    };
  } catch (err) {
    await nats.nc.close();
    throw err;
  }
}
