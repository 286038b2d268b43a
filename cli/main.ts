// Runs one command whose arguments passed preflight.ts (cli/dwcp.ts calls it). Each command's
// modules, and the services and native addon behind them, are imported only when it runs.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "#common/errors.js";
import type { FederationScope } from "#common/credentials/permissions.js";
import { SiteId } from "#schemas/federation.js";
import { MAX_WEIGHT } from "#schemas/common.js";
import { natsUrlFromEnv } from "#common/config.js";
import { applyConfigFile, findConfigFile, readConfigFile, type ConfigFile } from "#common/config-file.js";
import type { StoredEvent } from "#common/event-store.js";
import { connectNats, NatsConnectError, permissionDenied, setProcessConnectDefaults, type Nats } from "#common/nats.js";
import { NatsServerMissingError } from "#common/nats-server.js";
import {
  fmtBytes,
  parseCompression,
  parseDuration,
  parseFrom,
  parseIntIn,
  parsePort,
  parseRate,
  parseSize,
  parseTo,
  UsageError,
} from "./args.js";
import { commandSpec } from "./commands.js";
import {
  cliEventTrust,
  findCredentials,
  foldStored,
  listSummaries,
  publishCommand,
  readMigration,
  takeCredentialFlags,
} from "./client.js";
import type { EventTrust } from "#common/signing.js";
import { EventTrustConfigError } from "#common/signing.js";
import { evolveTrusted, initialMigration, isListed, refusal, summaryOf, type Migration } from "#migration";

const common = {
  nats: { type: "string" },
  json: { type: "boolean", default: false },
} as const;

/** The metrics listener's flags, as parseArgs options. */
const METRICS_OPTIONS = {
  "metrics-listen": { type: "string" },
  "metrics-token-file": { type: "string" },
} as const;

function args<T extends NonNullable<ParseArgsConfig["options"]>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options: { ...common, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The URL a command talks to, for messages that name it. */
let talkingTo = "";

async function withNats<T>(url: string | undefined, fn: (nats: Nats) => Promise<T>): Promise<T> {
  talkingTo = url ?? natsUrlFromEnv();
  const nats = await connectNats(talkingTo, "dwcp-cli", undefined);
  try {
    return await fn(nats);
  } finally {
    await nats.nc.close();
  }
}

const out = (s: string): boolean => process.stdout.write(`${s}\n`);

/** `--site S --peers P,Q`: where this deployment sits in a federation (none without --site). */
function federationScope(site: string | undefined, peers: string | undefined): FederationScope | undefined {
  if (site === undefined) {
    if (peers !== undefined) throw new UsageError("--peers needs --site");
    return undefined;
  }
  const list = (peers ?? "").split(",").filter(Boolean);
  for (const [flag, id] of [["--site", site], ...list.map((p) => ["--peers", p])] as const)
    if (!SiteId.safeParse(id).success)
      throw new UsageError(`${flag} must be a site id (1-32 of A-Z a-z 0-9 _ -), got "${id}"`);
  if (list.includes(site)) throw new UsageError(`--peers must not name this site (${site})`);
  return { site, peers: [...new Set(list)] };
}

/** `--site-hosts S=A,B` (repeatable): each site's hosts, for the leafnode links' permissions. */
function siteHostsOf(given: readonly string[], federation: FederationScope | undefined): Record<string, string[]> {
  if (given.length > 0 && federation === undefined) throw new UsageError("--site-hosts needs --site");
  const out: Record<string, string[]> = {};
  const known = federation === undefined ? [] : [federation.site, ...federation.peers];
  for (const g of given) {
    const m = /^([^=]+)=(.*)$/.exec(g);
    if (!m?.[1] || !known.includes(m[1]))
      throw new UsageError(`--site-hosts must be S=HOST,... with S one of --site and --peers, got "${g}"`);
    out[m[1]] = (m[2] ?? "").split(",").filter(Boolean);
  }
  return out;
}

/** What the user can do about an error that is theirs to fix (exit 2), or undefined. */
function usageMessage(err: unknown): string | undefined {
  const denied = permissionDenied();
  if (denied) return denied.message;
  if (
    err instanceof UsageError ||
    err instanceof ConfigError ||
    err instanceof NatsServerMissingError ||
    err instanceof EventTrustConfigError ||
    err instanceof NatsConnectError
  )
    return err.message;
  const message = err instanceof Error ? err.message : String(err);
  // JetStream's answer when the streams were never created at this NATS.
  if (/stream not found|jetstream is not enabled/i.test(message) && talkingTo)
    return `no dwcp streams at ${talkingTo}: run \`dwcp init\` there (or start a stack with \`dwcp up\`)`;
  return undefined;
}

export interface MainOptions {
  connectTimeoutMs?: number | undefined;
  /** --config FILE. */
  configFile?: string | undefined;
  /** --data-dir DIR, where dwcp.toml is looked for without --config or $DWCP_CONFIG. */
  dataDir?: string | undefined;
}

export async function main(argv: string[], opts: MainOptions = {}): Promise<number> {
  const [cmd = "", ...given] = argv;
  let rest = given;
  try {
    // The config file is read and checked before anything starts; its values go under the
    // environment's, and flags win over both in each loader (services/common/settings.ts).
    const found = findConfigFile({ flag: opts.configFile, env: process.env, dataDir: opts.dataDir });
    const file = found === undefined ? undefined : readConfigFile(found);
    if (cmd === "config") return await config(rest, file);
    applyConfigFile(file);
    const spec = commandSpec(cmd);
    const role = spec?.role;
    if (role !== undefined && !(cmd === "init" && given.includes("--print-config"))) {
      const taken = takeCredentialFlags(given, spec?.keepsDataDir ?? false);
      rest = taken.argv;
      setProcessConnectDefaults({
        credentials: findCredentials(taken.flags, role),
        waitOnFirstConnect: false,
        failOnPermissionViolation: true,
        ...(opts.connectTimeoutMs !== undefined ? { timeoutMs: opts.connectTimeoutMs } : {}),
      });
    }
    return await run(cmd, rest);
  } catch (err) {
    const usage = usageMessage(err);
    process.stderr.write(`dwcp: ${usage ?? (err as Error).message ?? String(err)}\n`);
    return usage === undefined ? 1 : 2;
  }
}

async function run(cmd: string, rest: string[]): Promise<number> {
  switch (cmd) {
    case "demo": {
      const { runDemo } = await import("./demo.js");
      return await runDemo(args(rest, { "data-dir": { type: "string" }, size: { type: "string" } }).values);
    }
    case "up": {
      const { values } = args(rest, {
        "data-dir": { type: "string" },
        hosts: { type: "string" },
        "nats-port": { type: "string" },
        sites: { type: "string" },
        "dashboard-listen": { type: "string" },
      });
      const { runUp, runUpSites } = await import("./up.js");
      const dashboardListen = values["dashboard-listen"] ?? "127.0.0.1:0";
      const dashboard = dashboardListen === "off" ? undefined : dashboardListen;
      if (values.sites !== undefined)
        return await runUpSites({
          dataDir: values["data-dir"] ?? ".dwcp",
          sites: Number(values.sites),
          hosts: (values.hosts ?? "a,b").split(","),
          dashboard,
        });
      return await runUp({
        dataDir: values["data-dir"] ?? ".dwcp",
        hosts: (values.hosts ?? "a,b").split(","),
        natsPort: values["nats-port"] ? parsePort("--nats-port", values["nats-port"]) : undefined,
        dashboard,
      });
    }
    case "init": {
      const { values } = args(rest, {
        replicas: { type: "string" },
        hosts: { type: "string" },
        "print-config": { type: "boolean", default: false },
        "data-dir": { type: "string" },
        port: { type: "string" },
        "server-names": { type: "string" },
        site: { type: "string" },
        peers: { type: "string" },
        "site-hosts": { type: "string", multiple: true },
      });
      const hosts = (values.hosts ?? "").split(",").filter(Boolean);
      const federation = federationScope(values.site, values.peers);
      if (values["print-config"]) {
        const { printConfig } = await import("./up.js");
        const serverNames = (values["server-names"] ?? "").split(",").filter(Boolean);
        const siteHosts = siteHostsOf(values["site-hosts"] ?? [], federation);
        const o = {
          dataDir: values["data-dir"] ?? ".dwcp",
          hosts,
          port: values.port,
          serverNames,
          federation,
          siteHosts,
        };
        out(await printConfig(o));
        return 0;
      }
      const replicas = Number(values.replicas ?? "1");
      const { ensureLayout, ensureWorkStream } = await import("#common/layout.js");
      await withNats(values.nats, async (n) => {
        await ensureLayout(n.nc, n.jsm, { replicas });
        for (const h of hosts) await ensureWorkStream(n.jsm, h, { replicas });
        if (federation !== undefined) {
          const { ensureSiteStreams } = await import("#federation");
          await ensureSiteStreams(n.jsm, federation.site, federation.peers);
        }
      });
      const queues = hosts.map((h) => `, work queue DWCP_WORK_${h}`).join("");
      const fed =
        federation === undefined
          ? ""
          : `, federation log FED_${federation.site}${federation.peers.map((p) => `, mirror FEDM_${p}`).join("")}`;
      out(`streams DWCP_CMD, DWCP_EVT and bucket dwcp_movers${queues}${fed} are ready`);
      return 0;
    }
    case "coordinator": {
      const { values } = args(rest, { replicas: { type: "string" }, ...METRICS_OPTIONS });
      const { runCoordinator } = await import("#coordinator");
      await runCoordinator(values);
      return process.exitCode === 1 ? 1 : 0;
    }
    case "mover": {
      const { values } = args(rest, {
        host: { type: "string" },
        root: { type: "string", multiple: true },
        listen: { type: "string" },
        advertise: { type: "string" },
        concurrency: { type: "string" },
        replicas: { type: "string" },
        "plaintext-data": { type: "boolean" },
        standby: { type: "boolean" },
        "vm-state-dir": { type: "string" },
        ...METRICS_OPTIONS,
      });
      const { runMover } = await import("#mover");
      await runMover(values);
      return process.exitCode === 1 ? 1 : 0;
    }
    case "migrate":
      return await migrate(rest);
    case "vm": {
      const { values, positionals } = args(rest, {
        definition: { type: "string" },
        qmp: { type: "string" },
        pid: { type: "string" },
        "state-dir": { type: "string" },
      });
      const { runVm } = await import("./vm.js");
      return await runVm(positionals, values, out);
    }
    case "federation": {
      const { values } = args(rest, {});
      const { federationStatus } = await import("#federation");
      out(await federationStatus(values.nats ?? natsUrlFromEnv(), { json: values.json }));
      return 0;
    }
    case "site": {
      const { values } = args(rest, {
        site: { type: "string" },
        peers: { type: "string" },
        "signing-key": { type: "string" },
        "health-interval": { type: "string" },
        "data-dir": { type: "string" },
      });
      const { runSite } = await import("#federation");
      await runSite(values);
      return process.exitCode === 1 ? 1 : 0;
    }
    case "status":
      return await status(rest);
    case "events":
      return await events(rest);
    case "migrate-set": {
      const { values, positionals } = args(rest, {
        "bandwidth-limit": { type: "string" },
        weight: { type: "string" },
        priority: { type: "string" },
        "data-dir": { type: "string" },
      });
      const id = positionals[0];
      const given = values["bandwidth-limit"];
      if (!id || (given === undefined && values.weight === undefined && values.priority === undefined))
        throw new UsageError(
          "migrate-set needs a migration id and what to change: dwcp migrate-set ID " +
            "[--bandwidth-limit 20M/s] [--weight N] [--priority P]",
        );
      const change = {
        ...(given === undefined
          ? {}
          : { bytesPerSec: /^(none|unlimited)$/i.test(given.trim()) ? null : parseRate("--bandwidth-limit", given) }),
        ...(values.weight === undefined ? {} : { weight: parseIntIn("--weight", values.weight, 1, MAX_WEIGHT) }),
        ...(values.priority === undefined ? {} : { priority: parseIntIn("--priority", values.priority, -100, 100) }),
      };
      const trust = cliEventTrust(values["data-dir"]);
      const { runSetOptions } = await import("./migrate.js");
      const r = await withNats(values.nats, (n) => runSetOptions(n, id, change, { trust }));
      if (!r.ok) process.stderr.write(`dwcp: ${r.message}\n`);
      else out(r.message);
      return r.ok ? 0 : 1;
    }
    case "top":
      return await top(rest);
    case "dashboard": {
      const { values } = args(rest, {
        listen: { type: "string" },
        "token-file": { type: "string" },
        "data-dir": { type: "string" },
      });
      const { runDashboard } = await import("./dashboard/index.js");
      talkingTo = values.nats ?? natsUrlFromEnv();
      return await runDashboard({
        natsUrl: talkingTo,
        listen: values.listen ?? "127.0.0.1:8089",
        tokenFile: values["token-file"],
        dataDir: values["data-dir"],
        out,
      });
    }
    case "cancel": {
      const { values, positionals } = args(rest, { reason: { type: "string" }, "data-dir": { type: "string" } });
      const id = positionals[0];
      if (!id) throw new UsageError("cancel needs a migration id: dwcp cancel ID");
      const trust = cliEventTrust(values["data-dir"]);
      const { runCancel } = await import("./migrate.js");
      const r = await withNats(values.nats, (n) => runCancel(n, id, { reason: values.reason, trust }));
      if (!r.ok) process.stderr.write(`dwcp: ${r.message}\n`);
      else out(r.message);
      return r.ok ? 0 : 1;
    }
    default: {
      const { runPitrCommand } = await import("./pitr.js");
      const pitr = runPitrCommand(cmd, rest);
      if (pitr) return await pitr;
      throw new UsageError(`unknown command "${cmd}"; run dwcp help`);
    }
  }
}

/** `dwcp config --print`: the settings' effective values, from the environment before the file. */
async function config(argv: string[], file: ConfigFile | undefined): Promise<number> {
  const { UNIQUE_FLAGS } = await import("#common/settings.js");
  const options = Object.fromEntries(
    [...UNIQUE_FLAGS].map(([flag, s]) => [flag, { type: s.type.kind === "switch" ? "boolean" : "string" }] as const),
  );
  const { values } = args(argv, { print: { type: "boolean", default: false }, ...options });
  if (!values.print) throw new UsageError("config needs --print: dwcp config --print [--json]");
  const { configReport, configText, flagValues } = await import("./config.js");
  const report = configReport({
    env: process.env,
    file,
    flags: flagValues(values),
  });
  out(values.json ? JSON.stringify(report) : configText(report));
  return 0;
}

async function migrate(argv: string[]): Promise<number> {
  const { values } = args(argv, {
    vm: { type: "string" },
    from: { type: "string" },
    to: { type: "string" },
    "chunk-size": { type: "string" },
    "batch-size": { type: "string" },
    "bandwidth-limit": { type: "string" },
    streams: { type: "string" },
    compression: { type: "string" },
    weight: { type: "string" },
    priority: { type: "string" },
    "no-verify": { type: "boolean", default: false },
    incremental: { type: "boolean", default: false },
    live: { type: "boolean", default: false },
    "downtime-limit": { type: "string" },
    postcopy: { type: "boolean", default: false },
    "no-auto-converge": { type: "boolean", default: false },
    id: { type: "string" },
    wait: { type: "boolean", default: false },
    "data-dir": { type: "string" },
  });
  if (!values.vm || !values.from || !values.to)
    throw new UsageError("migrate needs --vm NAME --from HOST:PATH[,PATH] --to HOST:DIR (or --live --from HOST)");
  if (values.live && values.from.includes(":"))
    throw new UsageError("--live: --from names the source host only; the VM's definition there lists its disks");
  if (values.live && values.incremental)
    throw new UsageError("--incremental moves image files; it cannot go with --live");
  for (const flag of ["downtime-limit", "postcopy", "no-auto-converge"] as const)
    if (!values.live && values[flag] !== undefined && values[flag] !== false)
      throw new UsageError(`--${flag} needs --live`);
  // With --live the bandwidth limit applies to the RAM stream and to the disk mirror, each.
  const liveLimit =
    values.live && values["bandwidth-limit"] ? parseRate("--bandwidth-limit", values["bandwidth-limit"]) : undefined;
  const options = {
    verify: !values["no-verify"],
    ...(values["chunk-size"] ? { chunkSizeBytes: parseSize("--chunk-size", values["chunk-size"]) } : {}),
    ...(values["batch-size"] ? { batchSizeBytes: parseSize("--batch-size", values["batch-size"]) } : {}),
    ...(values["bandwidth-limit"] && !values.live
      ? { bandwidthLimitBytesPerSec: parseRate("--bandwidth-limit", values["bandwidth-limit"]) }
      : {}),
    ...(values.streams ? { streams: Number(values.streams) } : {}),
    ...(values.compression ? { compression: parseCompression(values.compression) } : {}),
    ...(values.weight ? { weight: parseIntIn("--weight", values.weight, 1, MAX_WEIGHT) } : {}),
    ...(values.priority ? { priority: parseIntIn("--priority", values.priority, -100, 100) } : {}),
    ...(values.incremental ? { incremental: true } : {}),
  };
  const { buildStart, runMigration } = await import("./migrate.js");
  let command;
  try {
    const downtime = values["downtime-limit"];
    command = buildStart({
      vm: values.vm,
      source: values.live ? { host: values.from, volumes: [] } : parseFrom(values.from),
      destination: parseTo(values.to),
      options,
      migrationId: values.id,
      ...(values.live
        ? {
            mode: "live" as const,
            live: {
              ...(downtime === undefined
                ? {}
                : { downtimeLimitMs: parseIntIn("--downtime-limit", downtime, 1, 60_000) }),
              ...(liveLimit === undefined ? {} : { ramBytesPerSec: liveLimit, mirrorBytesPerSec: liveLimit }),
              ...(values.postcopy ? { postcopy: true } : {}),
              ...(values["no-auto-converge"] ? { autoConverge: false } : {}),
            },
          }
        : {}),
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const id = command.migrationId ?? command.commandId;
  return withNats(values.nats, async (nats) => {
    if (!values.wait) {
      await publishCommand(nats, command);
      out(
        values.json
          ? JSON.stringify({ migrationId: id, state: "requested" })
          : `migration ${id} requested; follow it with: dwcp status ${id}`,
      );
      return 0;
    }
    const trust = cliEventTrust(values["data-dir"]);
    const r = await runMigration(nats, command, { progress: !values.json, trust });
    if (values.json) out(JSON.stringify(r));
    else if (r.state === "completed" && r.downtimeMs !== undefined)
      out(
        `migration ${id} completed: VM ${values.vm} runs on ${command.destination.host} ` +
          `after ${r.seconds.toFixed(2)} s, ${r.downtimeMs} ms downtime`,
      );
    else if (r.state === "completed")
      out(
        `migration ${id} completed: ${fmtBytes(r.bytes)} in ${r.seconds.toFixed(2)} s ` +
          `(${fmtBytes(r.wireBytes)} on the wire, ${fmtBytes(r.zeroBytes)} zero` +
          `${r.baseReusedBytes === undefined ? "" : `, ${fmtBytes(r.baseReusedBytes)} from the earlier copy`})`,
      );
    else out(`migration ${id} ${r.state}: ${r.reason ?? ""} ${r.message ?? ""}`);
    return r.state === "completed" ? 0 : 1;
  });
}

async function status(argv: string[]): Promise<number> {
  const { values, positionals } = args(argv, { "data-dir": { type: "string" } });
  const trust = cliEventTrust(values["data-dir"]);
  return withNats(values.nats, async (nats) => {
    const id = positionals[0];
    let list;
    if (id) {
      const { state, events } = await readAnySite(nats, id, trust);
      if (!isListed({ state: state.status, ignored: state.ignored }))
        throw new UsageError(`no migration with id ${id}`);
      list = [summaryOf(state, { messages: events.length, lastSeq: events.at(-1)?.seq ?? 0 })];
    } else list = await listSummaries(nats, trust);
    const { statusRow, statusTable } = await import("./status-table.js");
    const rows = list.map((m) => statusRow(m, new Date()));
    if (values.json) out(JSON.stringify(id ? rows[0] : rows));
    else out(statusTable(rows));
    return 0;
  });
}

async function top(argv: string[]): Promise<number> {
  const { values } = args(argv, {
    "data-dir": { type: "string" },
    once: { type: "boolean", default: false },
    interval: { type: "string" },
  });
  const intervalMs = parseDuration("--interval", values.interval ?? "1s");
  if (intervalMs < 100 || intervalMs > 1_000)
    throw new UsageError(`--interval must be between 100ms and 1s, got "${values.interval}"`);
  if (values.json && !values.once) throw new UsageError("--json needs --once: dwcp top --once --json");
  const trust = cliEventTrust(values["data-dir"]);
  const { runTop } = await import("./top.js");
  return withNats(values.nats, (n) =>
    runTop(n, { trust, once: values.once, json: values.json, intervalMs, source: talkingTo }),
  );
}

async function events(argv: string[]): Promise<number> {
  const { values, positionals } = args(argv, { "data-dir": { type: "string" } });
  const id = positionals[0];
  if (!id) throw new UsageError("events needs a migration id: dwcp events ID");
  const trust = cliEventTrust(values["data-dir"]);
  return withNats(values.nats, async (nats) => {
    const { events: found, site } = await readAnySite(nats, id, trust);
    const list = withIgnored(id, found);
    if (list.length === 0) throw new UsageError(`no migration with id ${id}`);
    if (site && !values.json) out(`(owned by site ${site}; a mirrored copy of its log, with its sequences)`);
    if (values.json)
      out(JSON.stringify(list.map((e) => ({ seq: e.seq, ...e.event, ...(e.ignored ? { ignored: e.ignored } : {}) }))));
    else
      for (const e of list)
        out(
          `${String(e.seq).padStart(6)}  ${e.event.at}  ${e.event.type}` +
            ("batch" in e.event ? ` batch=${e.event.batch}` : "") +
            ("reason" in e.event && e.event.reason ? ` ${e.event.reason}` : "") +
            ("code" in e.event ? ` ${e.event.code}` : "") +
            (e.ignored ? `  ignored: ${e.ignored}` : ""),
        );
    return 0;
  });
}

/**
 * A migration from this site's log or, at a federation site, from the mirrored log of the site
 * that owns it (`site` then names the owner).
 */
async function readAnySite(
  nats: Nats,
  id: string,
  trust: EventTrust,
): Promise<{ state: Migration; events: StoredEvent[]; site?: string }> {
  const local = await readMigration(nats, id, trust);
  if (local.events.length > 0) return local;
  const { readMirroredMigration } = await import("#federation");
  const mirrored = await readMirroredMigration(nats.js, nats.jsm, id, trust);
  if (!mirrored) return local;
  return {
    // Another site's log, checked like a local one: the federation's trust file names every
    // site's producers.
    state: foldStored(id, mirrored.events),
    events: mirrored.events,
    site: mirrored.site,
  };
}

/** Each event with the reason it was not folded, if it was not (its producer may not make it). */
function withIgnored(id: string, events: StoredEvent[]): Array<StoredEvent & { ignored?: string }> {
  let state = initialMigration(id);
  return events.map((e) => {
    const reason = e.provenance === undefined ? undefined : refusal(state, e.event, e.provenance);
    state = evolveTrusted(state, e);
    return reason === undefined ? e : { ...e, ignored: reason };
  });
}
