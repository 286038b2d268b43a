import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "#common/errors.js";
import { natsUrlFromEnv } from "#common/config.js";
import { ensureLayout, ensureWorkStream } from "#common/layout.js";
import type { StoredEvent } from "#common/event-store.js";
import { connectNats, NatsConnectError, setProcessConnectDefaults, type Nats } from "#common/nats.js";
import { printConfig } from "./up.js";
import { NatsServerMissingError } from "#common/nats-server.js";
import { runCoordinator } from "#coordinator";
import { runMover } from "#mover";
import { fmtBytes, parseFrom, parseSize, parseTo, UsageError } from "./args.js";
import {
  clientRoleOf,
  cliEventTrust,
  findCredentials,
  foldStored,
  listMigrations,
  newId,
  publishCommand,
  readMigration,
  takeCredentialFlags,
} from "./client.js";
import { runDemo } from "./demo.js";
import { buildStart, runMigration } from "./migrate.js";
import { runUp, runUpSites } from "./up.js";
import { PITR_HELP, runPitrCommand } from "./pitr.js";
import { federationStatus, readMirroredMigration } from "#federation";
import { evolveTrusted, initialMigration, refusal, type Migration } from "#migration";
import { EventTrustConfigError, type EventTrust } from "#common/signing.js";

/** The column where HELP's descriptions start, for its lines too long to write out. */
const COL = " ".repeat(40);

const HELP = `dwcp: move VM disk and memory images between hosts, recorded as events in NATS JetStream

usage: dwcp <command> [flags]          (every command takes --nats URL, default $DWCP_NATS_URL or nats://127.0.0.1:4222)

  demo                                  start an embedded stack, migrate a generated VM image, verify it
  up [--data-dir D] [--hosts a,b] [--nats-port N] [--sites N]
${COL}embedded stack: nats-server, coordinator, one mover per host (root D/hosts/<host>);
${COL}with --sites N: N federated sites (own nats-server and JetStream domain, coordinator
${COL}and movers <site>-<host> each, leafnodes to a hub); migrations may cross sites
  federation status [--json]            all sites, their health and capacity, VM placements, staleness
  init [--replicas 1|3] [--hosts a,b]   as admin: create streams, consumers, the mover registry and each host's work
                                        queue (idempotent); --print-config [--data-dir D] [--hosts a,b] [--port N]
                                        provisions credentials in D and prints the nats-server config and
                                        the permissions
  coordinator [--replicas 1|3]          run a coordinator
  mover --host ID --root DIR [--root DIR] --listen HOST:PORT [--advertise HOST] [--concurrency N]
                                        run a mover (needs DWCP_SECRET, the same on every mover)
  migrate --vm NAME --from HOST:PATH[,PATH[=memory]...] --to HOST:DIR [--chunk-size SIZE]
          [--bandwidth-limit SIZE/s] [--no-verify] [--id ID] [--wait] [--json]
  status [ID] [--json]                  one migration, or all
  events ID [--json]                    a migration's event log
  cancel ID [--reason TEXT]
${PITR_HELP}
Commands that talk to NATS authenticate with the stack's credentials: --data-dir D (default .dwcp, as for
dwcp up: D/creds/cli.nk and D/pki/; admin's for init, backup and restore-log), or --creds FILE --tls-ca FILE
--tls-cert FILE --tls-key FILE, or DWCP_NKEY_FILE, DWCP_TLS_CA, DWCP_TLS_CERT, DWCP_TLS_KEY.`;

const common = {
  nats: { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h" },
} as const;

function args<T extends NonNullable<ParseArgsConfig["options"]>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options: { ...common, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

async function withNats<T>(url: string | undefined, fn: (nats: Nats) => Promise<T>): Promise<T> {
  const nats = await connectNats(url ?? natsUrlFromEnv(), "dwcp-cli", undefined);
  try {
    return await fn(nats);
  } finally {
    await nats.nc.close();
  }
}

const out = (s: string): boolean => process.stdout.write(`${s}\n`);

/**
 * Client commands that read --data-dir themselves as well (the stack's layout for hints, its
 * trust.json to verify events, its admin key to sign or check backups): it is kept for them.
 */
const KEEPS_DATA_DIR = new Set(["replicate", "restore", "status", "events", "migrate", "backup", "restore-log"]);

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...given] = argv;
  let rest = given;
  try {
    const role = cmd === undefined ? undefined : clientRoleOf(cmd);
    if (role !== undefined && !(cmd === "init" && given.includes("--print-config"))) {
      const taken = takeCredentialFlags(given, KEEPS_DATA_DIR.has(cmd ?? ""));
      rest = taken.argv;
      setProcessConnectDefaults({ credentials: findCredentials(taken.flags, role), waitOnFirstConnect: false });
    }
    switch (cmd) {
      case undefined:
      case "help":
      case "--help":
      case "-h":
        out(HELP);
        return 0;
      case "demo":
        return await runDemo(args(rest, { "data-dir": { type: "string" }, size: { type: "string" } }).values);
      case "up": {
        const { values } = args(rest, {
          "data-dir": { type: "string" },
          hosts: { type: "string" },
          "nats-port": { type: "string" },
          sites: { type: "string" },
        });
        if (values.sites !== undefined)
          return await runUpSites({
            dataDir: values["data-dir"] ?? ".dwcp",
            sites: Number(values.sites),
            hosts: (values.hosts ?? "a,b").split(","),
          });
        return await runUp({
          dataDir: values["data-dir"] ?? ".dwcp",
          hosts: (values.hosts ?? "a,b").split(","),
          natsPort: values["nats-port"] ? Number(values["nats-port"]) : undefined,
        });
      }
      case "init": {
        const { values } = args(rest, {
          replicas: { type: "string", default: "1" },
          hosts: { type: "string" },
          "print-config": { type: "boolean", default: false },
          "data-dir": { type: "string" },
          port: { type: "string" },
        });
        const hosts = (values.hosts ?? "").split(",").filter(Boolean);
        if (values["print-config"]) {
          out(await printConfig({ dataDir: values["data-dir"] ?? ".dwcp", hosts, port: values.port }));
          return 0;
        }
        const replicas = Number(values.replicas);
        await withNats(values.nats, async (n) => {
          await ensureLayout(n.nc, n.jsm, { replicas });
          for (const h of hosts) await ensureWorkStream(n.jsm, h, { replicas });
        });
        const queues = hosts.map((h) => `, work queue DWCP_WORK_${h}`).join("");
        out(`streams DWCP_CMD, DWCP_EVT and bucket dwcp_movers${queues} are ready`);
        return 0;
      }
      case "coordinator": {
        const { values } = args(rest, { replicas: { type: "string" } });
        await runCoordinator({ nats: values.nats, replicas: values.replicas });
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
        });
        await runMover(values);
        return process.exitCode === 1 ? 1 : 0;
      }
      case "migrate":
        return await migrate(rest);
      case "federation": {
        const { values, positionals } = args(rest, {});
        if (positionals[0] !== "status") throw new UsageError("usage: dwcp federation status [--json]");
        out(await federationStatus(values.nats ?? natsUrlFromEnv(), { json: values.json }));
        return 0;
      }
      case "status":
        return await status(rest);
      case "events":
        return await events(rest);
      case "cancel": {
        const { values, positionals } = args(rest, { reason: { type: "string" } });
        const id = positionals[0];
        if (!id) throw new UsageError("cancel needs a migration id: dwcp cancel ID");
        await withNats(values.nats, (n) =>
          publishCommand(n, {
            type: "CancelMigration",
            version: 1,
            commandId: newId("cmd"),
            migrationId: id,
            reason: values.reason,
          }),
        );
        out(`cancel requested for ${id}`);
        return 0;
      }
      default: {
        const pitr = runPitrCommand(cmd, rest);
        if (pitr) return await pitr;
        throw new UsageError(`unknown command "${cmd}"; run dwcp help`);
      }
    }
  } catch (err) {
    if (
      err instanceof UsageError ||
      err instanceof ConfigError ||
      err instanceof NatsServerMissingError ||
      err instanceof EventTrustConfigError ||
      err instanceof NatsConnectError
    ) {
      process.stderr.write(`dwcp: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`dwcp: ${(err as Error).message ?? String(err)}\n`);
    return 1;
  }
}

async function migrate(argv: string[]): Promise<number> {
  const { values } = args(argv, {
    vm: { type: "string" },
    from: { type: "string" },
    to: { type: "string" },
    "chunk-size": { type: "string" },
    "batch-size": { type: "string" },
    "bandwidth-limit": { type: "string" },
    "no-verify": { type: "boolean", default: false },
    id: { type: "string" },
    wait: { type: "boolean", default: false },
    "data-dir": { type: "string" },
  });
  if (!values.vm || !values.from || !values.to)
    throw new UsageError("migrate needs --vm NAME --from HOST:PATH[,PATH] --to HOST:DIR");
  const options = {
    verify: !values["no-verify"],
    ...(values["chunk-size"] ? { chunkSizeBytes: parseSize("--chunk-size", values["chunk-size"]) } : {}),
    ...(values["batch-size"] ? { batchSizeBytes: parseSize("--batch-size", values["batch-size"]) } : {}),
    ...(values["bandwidth-limit"]
      ? { bandwidthLimitBytesPerSec: parseSize("--bandwidth-limit", values["bandwidth-limit"].replace(/\/s$/, "")) }
      : {}),
  };
  let command;
  try {
    command = buildStart({
      vm: values.vm,
      source: parseFrom(values.from),
      destination: parseTo(values.to),
      options,
      migrationId: values.id,
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
    else if (r.state === "completed")
      out(
        `migration ${id} completed: ${fmtBytes(r.bytes)} in ${r.seconds.toFixed(2)} s ` +
          `(${fmtBytes(r.wireBytes)} on the wire, ${fmtBytes(r.zeroBytes)} zero)`,
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
    const list = id ? [(await readAnySite(nats, id, trust)).state] : await listMigrations(nats, trust);
    if (id && list[0]?.status === "none" && !list[0].ignored) throw new UsageError(`no migration with id ${id}`);
    const rows = list.map((m) => ({
      migrationId: m.id,
      state: m.status,
      vm: m.request?.vm,
      bytesDone: m.totals.bytes,
      bytesTotal: m.plan?.totalBytes,
      batchesDone: m.batches.filter((b) => b.status === "done").length,
      batches: m.plan?.batchCount,
      ...(m.reason ? { reason: m.reason, message: m.message } : {}),
      ...(m.ignored ? { ignored: m.ignored } : {}),
    }));
    if (values.json) out(JSON.stringify(id ? rows[0] : rows));
    else
      for (const r of rows)
        out(
          `${r.migrationId}  ${r.state.padEnd(9)}  ${r.vm ?? "-"}  ` +
            `${fmtBytes(r.bytesDone)}/${fmtBytes(r.bytesTotal ?? 0)}  batches ${r.batchesDone}/${r.batches ?? 0}` +
            (r.reason ? `  ${r.reason}: ${r.message}` : "") +
            (r.ignored ? `  ignored: ${r.ignored.count} event(s), last ${r.ignored.recent.at(-1)?.reason ?? ""}` : ""),
        );
    return 0;
  });
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
