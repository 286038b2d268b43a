// Point-in-time recovery and replication commands. cli/main.ts dispatches to runPitrCommand.
import { loadConfig } from "#common/config.js";
import { createLogger } from "#common/logger.js";
import { MetricsConfig, metricsInput } from "#common/metrics/config.js";
import { startObservability, type Observability } from "#common/metrics/observe.js";
import { metrics } from "#common/metrics/registry.js";
import { observeSync, observeSyncFailed } from "#replication";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { natsUrlFromEnv, parseHostPort } from "#common/config.js";
import { connectNats, type Nats } from "#common/nats.js";
import {
  backup,
  BackupKeyInvalidError,
  formatReplay,
  loadSigningKey,
  signKeyFile,
  trustFileOf,
  trustFromTrustFile,
  trustHmacFile,
  trustPublicKey,
  type BackupTrust,
  isKnownHost,
  readReplicationChecked,
  replay,
  replayBackup,
  type ReplayOptions,
  ReplicationServiceUnavailableError,
  replicateVm,
  restoreVm,
  type ReplicationSynced,
  restoreLog,
  runDrill,
  runReplicationAgent,
  runReplicationService,
} from "#replication";
import { vmNameProblem } from "#schemas/names.js";
import type { ReplicateVm, RestoreVm } from "#schemas/replication.js";
import { fmtBytes, parseDuration, parseFrom, parseSize, parseTo, UsageError } from "./args.js";
import { generateImage } from "./image.js";
import { cliEventTrust, cliTrustSource } from "./client.js";
import { Stack, type ServiceProcess } from "./stack.js";

export const PITR_HELP = `
  replay (--until TIME | --until-seq N) [--vm NAME] [--backup FILE] [--chunks] [--data-dir D] [--json]
          [--trust-key PUBLIC_NKEY | --hmac-key FILE] [--allow-unsigned]
                                        the coordinator's view as of a time or stream sequence (read-only),
                                        folding only events signed by a producer allowed to make them
                                        (D/trust.json or DWCP_TRUST_FILE; the rest are listed as ignored);
                                        --backup folds a backup file instead of the live stream (a large
                                        one in parallel), after checking its signature as restore-log does;
                                        --chunks keeps each batch's chunk list in --json
  backup --out FILE [--streams DWCP_EVT[,DWCP_CMD]] [--sign-key FILE | --data-dir D] [--json]
                                        export the event log with sequences, timestamps, headers and a digest,
                                        signed with an nkey seed (ed25519) or an HMAC secret (DWCP_BACKUP_KEY;
                                        default with --data-dir: the stack's admin key D/creds/admin.nk)
  restore-log --in FILE [--trust-key PUBLIC_NKEY | --hmac-key FILE | --data-dir D] [--allow-unsigned]
          [--skip-invalid] [--replicas N] [--json]
                                        verify a backup's signature (DWCP_TRUST_FILE or D/trust.json: the admin
                                        key), streams and every payload, then import it into empty or absent
                                        dwcp streams created with dwcp's own configuration; --skip-invalid
                                        leaves out (and logs) payloads that fail their schema instead of
                                        refusing the file
  replicate --vm NAME --from HOST[:PATH[,PATH]] --to HOST:DIR [--every DURATION] [--keep N | --keep-for DURATION]
          [--agent HOST:PORT] [--chunk-size SIZE] [--json]
                                        incremental snapshots into HOST's content-addressed store DIR/.dwcp-store,
                                        taken by the source HOST's replication service (paths under its roots);
                                        --from HOST alone: the VM running there, at one point in time (QEMU)
  replication-service --host HOST [--data-dir D | --roots HOST=DIR,...]
                                        the source side of replication for HOST: runs the syncs that "replicate"
                                        asks for (DWCP_SECRET for --agent destinations); "dwcp up" starts one
  replication-agent --root DIR --listen HOST:PORT
                                        serve stores DIR/<dir>/.dwcp-store to replicating sources (needs DWCP_SECRET)
  drill [--size SIZE] [--data-dir D] [--keep] [--json]
                                        DR drill on an embedded stack: replicate, back the log up, kill -9 the
                                        primary, restore at a fresh DR site; prints RPO and RTO. Says where it
                                        works (a new temp dir unless --data-dir) and removes it after (--keep keeps it)
  snapshots --vm NAME [--data-dir D] [--json]
                                        committed snapshots of a VM (from events signed by the source host's
                                        replication service; others are listed as ignored)
  restore --vm NAME (--at TIME | --snapshot ID) --to HOST:PATH [--store DIR] [--start] [--json]
                                        write the VM's volumes as they were, byte-identical and sparse
                                        (HOST's replication service writes them, paths under its root);
                                        --start then boots the VM from them on HOST
`;

const common = { nats: { type: "string" }, json: { type: "boolean", default: false } } as const;
const out = (s: string): boolean => process.stdout.write(`${s}\n`);

function flags<T extends Record<string, { type: "string" | "boolean"; default?: string | boolean }>>(
  argv: string[],
  options: T,
) {
  try {
    return parseArgs({ args: argv, options: { ...common, ...options }, allowPositionals: false, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

const natsUrl = (v: { nats?: string }): string => v.nats ?? natsUrlFromEnv();

/** How to start the replication service of `host`, for the error when none answers. */
function startHint(host: string, v: { roots?: string; "data-dir"?: string }): string {
  const layout = v.roots ? ` --roots ${v.roots}` : v["data-dir"] ? ` --data-dir ${v["data-dir"]}` : "";
  return `dwcp replication-service --host ${host}${layout}`;
}

/** An ISO 8601 time, or `now` (this moment, to the millisecond). */
function parseTime(flag: string, v: string): Date {
  if (v.trim().toLowerCase() === "now") return new Date();
  const d = new Date(v);
  if (Number.isNaN(d.getTime()))
    throw new UsageError(`${flag} must be a time like 2026-11-26T21:15:00Z or now, got "${v}"`);
  return d;
}

async function withNats<T>(url: string, fn: (n: Nats) => Promise<T>): Promise<T> {
  const n = await connectNats(url, "dwcp-cli");
  try {
    return await fn(n);
  } finally {
    await n.nc.close();
  }
}

/** `dwcp replay`. */
export async function cmdReplay(argv: string[]): Promise<number> {
  const v = flags(argv, {
    until: { type: "string" },
    "until-seq": { type: "string" },
    vm: { type: "string" },
    backup: { type: "string" },
    chunks: { type: "boolean", default: false },
    "data-dir": { type: "string" },
    "trust-key": { type: "string" },
    "hmac-key": { type: "string" },
    "allow-unsigned": { type: "boolean", default: false },
  });
  if (v.until === undefined && v["until-seq"] === undefined && v.backup === undefined)
    throw new UsageError("replay needs --until TIME or --until-seq N (or --backup FILE for the whole file)");
  const untilSeq = v["until-seq"] === undefined ? undefined : Number(v["until-seq"]);
  if (untilSeq !== undefined && !(Number.isInteger(untilSeq) && untilSeq >= 0))
    throw new UsageError(`--until-seq must be a sequence number, got "${v["until-seq"]}"`);
  const opts = {
    ...(untilSeq !== undefined ? { untilSeq } : {}),
    ...(v.until !== undefined ? { untilTime: parseTime("--until", v.until) } : {}),
    ...(v.vm !== undefined ? { vm: v.vm } : {}),
    chunks: v.chunks,
    // Events are folded by the producer rules the services fold by.
    trust: cliTrustSource(v["data-dir"]),
  };
  const view = v.backup
    ? await replayBackup(v.backup, await replayBackupOptions(opts, v))
    : await replay(natsUrl(v), opts);
  out(v.json ? JSON.stringify(view) : formatReplay(view));
  return 0;
}

/** The key a backup must be signed with (or --allow-unsigned, with its warning), as `cmd` asks for it. */
async function requireBackupTrust(
  cmd: string,
  done: string,
  v: { "trust-key"?: string; "hmac-key"?: string; "data-dir"?: string; "allow-unsigned"?: boolean },
): Promise<{ trust?: BackupTrust; allowUnsigned: boolean }> {
  const trust = await restoreTrust(v);
  const allowUnsigned = v["allow-unsigned"] ?? false;
  if (trust === undefined && !allowUnsigned)
    throw new UsageError(
      `${cmd} needs the key your backups are signed with: --trust-key PUBLIC_NKEY, --hmac-key FILE, ` +
        "DWCP_TRUST_FILE, or --data-dir D of a `dwcp up` stack (its trust.json's admin key)",
    );
  if (allowUnsigned)
    process.stderr.write(`dwcp: warning: --allow-unsigned: an unsigned backup is ${done} without proof of origin\n`);
  return { ...(trust ? { trust } : {}), allowUnsigned };
}

/** A replayed backup's signature is checked as restore-log checks it. */
async function replayBackupOptions(
  opts: ReplayOptions,
  v: Parameters<typeof requireBackupTrust>[2],
): Promise<ReplayOptions> {
  const { trust, allowUnsigned } = await requireBackupTrust("replay --backup", "replayed", v);
  return { ...opts, ...(trust ? { backupTrust: trust } : {}), allowUnsigned };
}

/** A key problem is the user's to fix: exit 2 with what to do. */
async function keyFrom<T>(load: () => T | Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if (err instanceof BackupKeyInvalidError || (err as { code?: string }).code === "CREDENTIALS_INVALID")
      throw new UsageError((err as Error).message);
    throw err;
  }
}

/** `dwcp backup`. */
export async function cmdBackup(argv: string[]): Promise<number> {
  const v = flags(argv, {
    out: { type: "string" },
    streams: { type: "string" },
    "sign-key": { type: "string" },
    "data-dir": { type: "string" },
  });
  if (!v.out) throw new UsageError("backup needs --out FILE");
  const keyFile = signKeyFile(v);
  if (keyFile === undefined)
    throw new UsageError(
      "backup needs a key to sign with: --sign-key FILE (an nkey seed, or an HMAC secret of 32+ bytes), " +
        "DWCP_BACKUP_KEY, or --data-dir D of a `dwcp up` stack (its creds/admin.nk)",
    );
  const key = await keyFrom(() => loadSigningKey(keyFile));
  const r = await backup(natsUrl(v), { out: v.out, key, ...(v.streams ? { streams: v.streams.split(",") } : {}) });
  const ranges = r.streams.map((s) => `${s.name} ${s.firstSeq}..${s.lastSeq}`).join(", ");
  out(
    v.json
      ? JSON.stringify(r)
      : `backed up ${r.messages} messages (${ranges}) to ${r.file}, signed ${r.signer}, in ${r.seconds.toFixed(2)} s`,
  );
  return 0;
}

/** The key restore-log checks the signature against: a flag, else the trust file's admin key. */
async function restoreTrust(v: {
  "trust-key"?: string;
  "hmac-key"?: string;
  "data-dir"?: string;
}): Promise<BackupTrust | undefined> {
  if (v["trust-key"] !== undefined && v["hmac-key"] !== undefined)
    throw new UsageError("use one of --trust-key PUBLIC_NKEY or --hmac-key FILE");
  const trustKey = v["trust-key"];
  if (trustKey !== undefined) return keyFrom(() => trustPublicKey(trustKey));
  const hmacKey = v["hmac-key"];
  if (hmacKey !== undefined) return keyFrom(() => trustHmacFile(hmacKey));
  const file = trustFileOf(v);
  return file === undefined ? undefined : keyFrom(() => trustFromTrustFile(file));
}

/** `dwcp restore-log`. */
export async function cmdRestoreLog(argv: string[]): Promise<number> {
  const v = flags(argv, {
    in: { type: "string" },
    replicas: { type: "string" },
    "trust-key": { type: "string" },
    "hmac-key": { type: "string" },
    "data-dir": { type: "string" },
    "allow-unsigned": { type: "boolean", default: false },
    "skip-invalid": { type: "boolean", default: false },
  });
  if (!v.in) throw new UsageError("restore-log needs --in FILE");
  const replicas = v.replicas === undefined ? undefined : Number(v.replicas);
  if (replicas !== undefined && !(Number.isInteger(replicas) && replicas >= 1 && replicas <= 5))
    throw new UsageError(`--replicas must be 1 to 5, got "${v.replicas}"`);
  const { trust, allowUnsigned } = await requireBackupTrust("restore-log", "imported", v);
  const r = await restoreLog(natsUrl(v), {
    in: v.in,
    allowUnsigned,
    skipInvalid: v["skip-invalid"] ?? false,
    ...(trust ? { trust } : {}),
    ...(replicas !== undefined ? { replicas } : {}),
  });
  const ranges = r.streams.map((s) => `${s.name} now ${s.firstSeq}..${s.lastSeq}`).join(", ");
  out(
    v.json
      ? JSON.stringify(r)
      : `restored ${r.messages} ${r.signature} messages from ${r.file} (${ranges}) in ${r.seconds.toFixed(2)} s` +
          (r.skipped > 0 ? `; left out ${r.skipped} invalid` : ""),
  );
  return 0;
}

/** The VM-name rule migrations use: a wildcard or dot would reach other VMs' subjects. */
function checkVm(vm: string): void {
  const problem = vmNameProblem(vm);
  if (problem !== undefined) throw new UsageError(`--vm: ${problem}`);
}

/**
 * A command may name only hosts the deployment knows (a registered mover, or a replication service
 * that answers): another name would have a service invent a host and write under a root nobody serves.
 */
async function checkHost(n: Nats, flag: string, host: string): Promise<void> {
  if (await isKnownHost(n.nc, host)) return;
  throw new UsageError(
    `${flag}: host ${JSON.stringify(host.slice(0, 64))} is not known here (no mover registered for it in ` +
      "dwcp_movers and no replication service answers for it); name a host of this deployment, or start " +
      `its services first (\`dwcp up\` starts them; or dwcp replication-service --host ${host.slice(0, 64)})`,
  );
}

/** `dwcp snapshots`. */
export async function cmdSnapshots(argv: string[]): Promise<number> {
  const v = flags(argv, { vm: { type: "string" }, "data-dir": { type: "string" } });
  if (!v.vm) throw new UsageError("snapshots needs --vm NAME");
  const vm = v.vm;
  checkVm(vm);
  const trust = cliEventTrust(v["data-dir"]);
  const { state, ignored } = await withNats(natsUrl(v), (n) => readReplicationChecked(n, vm, trust));
  if (v.json) out(JSON.stringify(state.snapshots));
  else if (state.snapshots.length === 0) out(`no snapshots of ${vm}`);
  else
    for (const s of state.snapshots)
      out(
        `${s.snapshotId}  taken ${s.takenAt}  ${fmtBytes(s.bytes)}  changed ${fmtBytes(s.changedBytes)}  ` +
          `wire ${fmtBytes(s.wireBytes)}  ${s.destination.host}:${s.destination.store}`,
      );
  // Events the fold left out are the reader's to know about (--json keeps stdout the snapshot list).
  if (ignored.count > 0) {
    process.stderr.write(`dwcp: ignored ${ignored.count} event(s) of ${vm} whose producer may not make them:\n`);
    for (const i of ignored.recent) process.stderr.write(`  seq ${i.seq} ${i.type}: ${i.reason}\n`);
  }
  return 0;
}

/** `dwcp restore`. */
export async function cmdRestore(argv: string[]): Promise<number> {
  const v = flags(argv, {
    vm: { type: "string" },
    at: { type: "string" },
    snapshot: { type: "string" },
    to: { type: "string" },
    store: { type: "string" },
    roots: { type: "string" },
    "data-dir": { type: "string" },
    start: { type: "boolean", default: false },
  });
  if (!v.vm || !v.to || (v.at === undefined) === (v.snapshot === undefined))
    throw new UsageError("restore needs --vm NAME, one of --at TIME or --snapshot ID, and --to HOST:PATH");
  checkVm(v.vm);
  const to = parseTo(v.to);
  const cmd: RestoreVm = {
    type: "RestoreVm",
    version: v.start ? 2 : 1,
    commandId: randomUUID(),
    vm: v.vm,
    ...(v.at ? { at: parseTime("--at", v.at).toISOString() } : {}),
    ...(v.snapshot ? { snapshotId: v.snapshot } : {}),
    to: { host: to.host, dir: to.dir },
    ...(v.store ? { storeDir: v.store } : {}),
    ...(v.start ? { start: true as const } : {}),
  };
  const vm = v.vm;
  const { result: r } = await withNats(natsUrl(v), async (n) => {
    await checkHost(n, "--to", to.host);
    return restoreVm(n.nc, cmd, { startHint: startHint(to.host, v) });
  });
  out(
    v.json
      ? JSON.stringify(r)
      : `restored ${vm} snapshot ${r.snapshotId} (taken ${r.takenAt}): ${r.files.map((f) => f.path).join(", ")} — ` +
          `${fmtBytes(r.bytes)} in ${r.seconds.toFixed(2)} s` +
          (r.started
            ? `\nstarted ${r.started.name} on ${to.host} (${r.started.state}, pid ${r.started.pid ?? "-"})`
            : ""),
  );
  return 0;
}

function chunkSize(value: string): number {
  const n = parseSize("--chunk-size", value);
  if (n < 4096 || n % 4096 !== 0 || n > 64 * 1024 * 1024)
    throw new UsageError(`--chunk-size must be a multiple of 4K up to 64M, got "${value}"`);
  return n;
}

function retentionOf(v: { keep?: string; "keep-for"?: string }): ReplicateVm["retention"] {
  if (v.keep !== undefined && v["keep-for"] !== undefined)
    throw new UsageError("use one of --keep N or --keep-for DURATION");
  const keep = v.keep === undefined ? undefined : Number(v.keep);
  if (keep !== undefined && !(Number.isInteger(keep) && keep >= 1))
    throw new UsageError(`--keep must be a count >= 1, got "${v.keep}"`);
  if (keep !== undefined) return { keep };
  return v["keep-for"] !== undefined ? { keepForMs: parseDuration("--keep-for", v["keep-for"]) } : undefined;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/**
 * `dwcp replicate`: asks the source host's replication service to sync, and prints what it did.
 * With --every, one command per period until Ctrl-C: the schedule lives here, so stopping the CLI
 * stops it (a sync in flight is awaited and reported; it commits whole or not at all).
 */
export async function cmdReplicate(argv: string[]): Promise<number> {
  const v = flags(argv, {
    vm: { type: "string" },
    from: { type: "string" },
    to: { type: "string" },
    every: { type: "string" },
    keep: { type: "string" },
    "keep-for": { type: "string" },
    agent: { type: "string" },
    roots: { type: "string" },
    "data-dir": { type: "string" },
    "chunk-size": { type: "string" },
    "metrics-listen": { type: "string" },
    "metrics-token-file": { type: "string" },
  });
  if (!v.vm || !v.from || !v.to)
    throw new UsageError("replicate needs --vm NAME --from HOST:PATH[,PATH] --to HOST:DIR (or --from HOST)");
  checkVm(v.vm);
  const retention = retentionOf(v);
  // --from HOST alone: the VM as it runs on HOST under QEMU, read at one point in time.
  const running = !v.from.includes(":");
  const from = running ? { host: v.from, volumes: [] } : parseFrom(v.from);
  const to = parseTo(v.to);
  const agent = v.agent ? parseHostPort(v.agent) : undefined;
  if (v.agent && !agent) throw new UsageError(`--agent must be HOST:PORT, got "${v.agent}"`);
  const everyMs = v.every ? parseDuration("--every", v.every) : undefined;
  if (v["metrics-listen"] !== undefined && everyMs === undefined)
    throw new UsageError("--metrics-listen needs --every: a single snapshot has nothing to watch");
  const cmd: ReplicateVm = {
    type: "ReplicateVm",
    version: running ? 2 : 1,
    commandId: randomUUID(),
    vm: v.vm,
    source: { host: from.host, paths: from.volumes.map((x) => x.path), ...(running ? { running: true } : {}) },
    destination: { host: to.host, dir: to.dir, ...(agent ? { agent } : {}) },
    ...(v["chunk-size"] ? { chunkSizeBytes: chunkSize(v["chunk-size"]) } : {}),
    ...(retention ? { retention } : {}),
  };
  const hint = startHint(from.host, v);
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.on("SIGINT", stop).on("SIGTERM", stop);
  // The schedule's metrics (only with --every and a listen address: one-shot commands serve none).
  const obs = await scheduleObservability(v, v.vm, everyMs);
  try {
    await withNats(natsUrl(v), async (n) => {
      // A replication agent is no host of the NATS deployment: the source dials it at --agent.
      if (agent === undefined) await checkHost(n, "--to", to.host);
      obs?.attach(n.nc, n.jsm);
      obs?.onState("running");
      const once = async (): Promise<void> => {
        // The source is read after the request: its time is a recovery point no later than the real one.
        const takenAt = new Date().toISOString();
        const r = await replicateVm(n.nc, { ...cmd, commandId: randomUUID() }, { startHint: hint });
        observeSync({ vm: cmd.vm, takenAt, ...r.result });
        printSync(r, v.json);
      };
      if (everyMs === undefined) return once();
      for (let first = true; !abort.signal.aborted; first = false) {
        const started = Date.now();
        try {
          await once();
        } catch (err) {
          if (first && err instanceof ReplicationServiceUnavailableError) throw err;
          observeSyncFailed();
          process.stderr.write(`dwcp: sync failed, the previous snapshot stays current: ${(err as Error).message}\n`);
        }
        await sleep(Math.max(0, everyMs - (Date.now() - started)), abort.signal);
      }
    });
  } finally {
    process.off("SIGINT", stop).off("SIGTERM", stop);
    await obs?.close();
  }
  return 0;
}

/** `dwcp replicate --every P --metrics-listen HOST:PORT`: the schedule's listener; else none. */
async function scheduleObservability(
  v: { "metrics-listen"?: string | undefined; "metrics-token-file"?: string | undefined },
  vm: string,
  everyMs: number | undefined,
): Promise<Observability | undefined> {
  if (everyMs === undefined || v["metrics-listen"] === undefined) return undefined;
  const settings = loadConfig(MetricsConfig, metricsInput(v, {}));
  const obs = await startObservability({ settings, log: createLogger("replicate"), labels: { svc: "replicate" } });
  metrics.rpoTarget.set({ vm }, everyMs / 1000);
  return obs;
}

function printSync(r: ReplicationSynced, json: boolean | undefined): void {
  const s = r.result;
  const pruned = r.pruned.length ? `; pruned ${r.pruned.length}` : "";
  out(
    json
      ? JSON.stringify({ ...s, pruned: r.pruned })
      : `snapshot ${s.snapshotId}: ${fmtBytes(s.bytes)}, changed ${fmtBytes(s.changedBytes)}, ` +
          `wire ${fmtBytes(s.wireBytes)} in ${s.seconds.toFixed(2)} s${pruned}` +
          (s.disks ?? [])
            .map((d) => `\n  ${d.name}: ${d.mode} read of ${fmtBytes(d.readBytes)}${d.reason ? ` (${d.reason})` : ""}`)
            .join(""),
  );
}

/** `dwcp replication-service`: the source side of replication for one host, until SIGTERM. */
export async function cmdReplicationService(argv: string[]): Promise<number> {
  const v = flags(argv, {
    host: { type: "string" },
    roots: { type: "string" },
    "data-dir": { type: "string" },
    "metrics-listen": { type: "string" },
    "metrics-token-file": { type: "string" },
  });
  await runReplicationService(v);
  return process.exitCode === 1 ? 1 : 0;
}

/** `dwcp replication-agent`. */
export async function cmdReplicationAgent(argv: string[]): Promise<number> {
  const v = flags(argv, {
    root: { type: "string" },
    listen: { type: "string" },
    "metrics-listen": { type: "string" },
    "metrics-token-file": { type: "string" },
  });
  await runReplicationAgent(v);
  return process.exitCode === 1 ? 1 : 0;
}

/** `dwcp drill`: an embedded primary site (nats-server, coordinator, movers) and a DR directory. */
export async function cmdDrill(argv: string[]): Promise<number> {
  const v = flags(argv, {
    size: { type: "string", default: "64M" },
    "data-dir": { type: "string" },
    keep: { type: "boolean", default: false },
  });
  const sizeBytes = parseSize("--size", v.size ?? "64M"); // checked before anything starts
  // A temp dir of its own is removed afterwards (unless --keep); a given --data-dir is the user's.
  const temp = v["data-dir"] === undefined;
  const dataDir = v["data-dir"] ?? mkdtempSync(join(tmpdir(), "dwcp-drill-"));
  process.stderr.write(`dwcp drill: working in ${dataDir}\n`);
  try {
    return await drillIn(dataDir, sizeBytes, v.json === true);
  } finally {
    if (temp && !v.keep) {
      rmSync(dataDir, { recursive: true, force: true });
      process.stderr.write(`dwcp drill: removed ${dataDir}\n`);
    } else process.stderr.write(`dwcp drill: kept ${dataDir}${temp ? "" : " (--data-dir)"}\n`);
  }
}

async function drillIn(dataDir: string, sizeBytes: number, json: boolean): Promise<number> {
  const stack = new Stack({ dataDir, hosts: ["a", "b"], replication: false });
  try {
    await stack.start();
    const disk = join(stack.root("a"), "vms/drill/disk.img");
    await mkdir(dirname(disk), { recursive: true });
    await generateImage(disk, { sizeBytes, zeroFraction: 0.5, seed: 1 });
    const all = (): ServiceProcess[] => [...stack.coordinators, ...stack.movers.values()];
    const r = await runDrill({
      primary: {
        nats: stack.nats,
        kill: async () =>
          void (await Promise.all([stack.server.stop("SIGKILL"), ...all().map((p) => p.stop("SIGKILL"))])),
      },
      vm: "drill",
      sources: [disk],
      drDir: join(dataDir, "dr"),
      syncs: 3,
      change: async (i) => {
        const fh = await open(disk, "r+");
        await fh.write(
          Buffer.alloc(64 * 1024, i),
          0,
          64 * 1024,
          (i * 7919 * 4096) % Math.max(4096, (await fh.stat()).size - 65536),
        );
        await fh.close();
      },
    });
    out(
      json
        ? JSON.stringify({ ...r, view: undefined, workDir: dataDir })
        : `DR drill: restored ${r.vm} snapshot ${r.snapshotId} (${r.verified ? "verified" : "NOT VERIFIED"}) ` +
            `to ${r.restored.join(", ")}\nRPO ${r.rpoSeconds.toFixed(2)} s (writes after ${r.takenAt} lost)  ` +
            `RTO ${r.rtoSeconds.toFixed(2)} s (disaster ${r.disasterAt} -> recovered ${r.recoveredAt})`,
    );
    return r.verified ? 0 : 1;
  } finally {
    await stack.stop();
  }
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  replay: cmdReplay,
  backup: cmdBackup,
  "restore-log": cmdRestoreLog,
  snapshots: cmdSnapshots,
  restore: cmdRestore,
  replicate: cmdReplicate,
  "replication-agent": cmdReplicationAgent,
  "replication-service": cmdReplicationService,
  drill: cmdDrill,
};

/** Runs a PITR command; undefined when `cmd` is not one (main.ts falls through to its own). */
export function runPitrCommand(cmd: string, argv: string[]): Promise<number> | undefined {
  return COMMANDS[cmd]?.(argv);
}
