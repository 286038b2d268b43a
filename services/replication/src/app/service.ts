import { join } from "node:path";
import { DwcpError } from "#common/errors.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import type { ReplicateVm, ReplicationCommand, RestoreVm } from "#schemas/replication.js";
import { STORE_DIR } from "../infra/chunk-store.js";
import { HEARTBEAT_MS, type Send } from "../infra/commands.js";
import { inside } from "../infra/host-roots.js";
import type { ReplicationLog } from "../infra/replication-log.js";
import { connectAgent } from "../infra/tcp.js";
import type { LinkSecurity } from "#common/secure-link/tls.js";
import { DestinationAgent, inProcess, type Transport } from "./destination.js";
import { replicate } from "./replicate.js";
import type { RetentionResult } from "./retention.js";
import { pickSnapshot, restoreFromStore } from "./restore.js";
import { readReplication } from "./snapshots.js";
import type { SyncResult } from "./sync.js";

/** A command this service cannot run as given; nothing was read or sent. */
export class CommandRefusedError extends DwcpError {
  readonly retryable = false;
  constructor(
    readonly code:
      | "WRONG_HOST"
      | "PATH_OUTSIDE_ROOT"
      | "SYNC_IN_PROGRESS"
      | "RESTORE_IN_PROGRESS"
      | "NO_SECRET"
      | "NO_TLS",
    message: string,
  ) {
    super(message);
  }
}

/** replicate() returned without reporting a sync: a bug, not a condition of the input. */
class NoSyncResultError extends DwcpError {
  readonly code = "INTERNAL";
  readonly retryable = false;
  constructor() {
    super("the sync ended without a result");
  }
}

export interface ReplicationServiceOptions {
  /** The source host this service reads volumes on. */
  host: string;
  /** Root directory of each host (volumes and state of this host; local stores of destinations). */
  root: (host: string) => string;
  log: ReplicationLog;
  /** For reads of the log (restore picks its snapshot from it). */
  nats: Nats;
  logger: Logger;
  /** Secret of remote replication agents (DWCP_SECRET); commands naming an agent need it. */
  secret?: string;
  /**
   * How links to remote agents are secured (DWCP_TLS_* or DWCP_DATA_PLAINTEXT=on); commands
   * naming an agent need one. With TLS the agent must present the destination host's certificate.
   */
  link?: LinkSecurity;
}

/**
 * Replication as a service of one host: runs one sync per ReplicateVm command with this host as
 * the source (scan, send changed chunks, commit, append SnapshotCommitted, retention for a local
 * store), and one restore per RestoreVm command that writes on this host; answers with what it
 * did. One sync per VM at a time: a second command for a VM that is syncing is refused
 * (SYNC_IN_PROGRESS) rather than queued, since it would only conflict with the first's append.
 * Schedules (`dwcp replicate --every`) stay with the client, which stops sending when it stops.
 */
export class ReplicationService {
  private readonly syncing = new Map<string, string>();
  private readonly restoring = new Set<string>();
  private readonly running = new Set<Promise<unknown>>();

  constructor(private readonly o: ReplicationServiceOptions) {}

  async handle(cmd: ReplicationCommand, send: Send): Promise<void> {
    switch (cmd.type) {
      case "PingReplication":
        send({ type: "ReplicationPong", version: 1, host: this.o.host, syncing: [...this.syncing.keys()] });
        return;
      case "ReplicateVm":
        return this.replicateVm(cmd, send);
      case "RestoreVm":
        return this.restoreVm(cmd, send);
      default:
        cmd satisfies never;
    }
  }

  private async replicateVm(cmd: ReplicateVm, send: Send): Promise<void> {
    const { commandId, vm } = cmd;
    const log = this.o.logger.child({ commandId, vm });
    const running = this.syncing.get(vm);
    const plan =
      running === undefined
        ? this.plan(cmd)
        : new CommandRefusedError("SYNC_IN_PROGRESS", `${vm} is already syncing (command ${running}); retry later`);
    if (plan instanceof CommandRefusedError) return refuse(log, send, commandId, plan);
    this.syncing.set(vm, commandId);
    try {
      log.info({ sources: plan.sources, store: plan.storePath }, "sync started");
      const { result, retention } = await this.run(commandId, send, () => this.sync(cmd, plan));
      const { event: _event, ...summary } = result;
      log.info(
        { snapshotId: result.snapshotId, changedBytes: result.changedBytes, pruned: retention?.pruned },
        "synced",
      );
      send({
        type: "ReplicationSynced",
        version: 1,
        commandId,
        result: summary,
        pruned: retention?.pruned ?? [],
        ...(retention ? { chunksDeleted: retention.chunksDeleted } : {}),
      });
    } finally {
      this.syncing.delete(vm);
    }
  }

  /** Restores into a directory under this host's root; one restore per target directory at a time. */
  private async restoreVm(cmd: RestoreVm, send: Send): Promise<void> {
    const { commandId, vm } = cmd;
    const log = this.o.logger.child({ commandId, vm });
    const root = this.o.root(this.o.host);
    const toDir = inside(root, cmd.to.dir);
    const storeDir = cmd.storeDir === undefined ? undefined : inside(root, cmd.storeDir);
    const refusal = this.restoreRefusal(cmd, root, toDir, storeDir);
    if (refusal || toDir === undefined) return refuse(log, send, commandId, refusal ?? outside(cmd.to.dir, root));
    this.restoring.add(toDir);
    try {
      log.info({ toDir, at: cmd.at, snapshotId: cmd.snapshotId }, "restore started");
      const result = await this.run(commandId, send, async () => {
        const snap = pickSnapshot(await readReplication(this.o.nats, vm), {
          ...(cmd.at !== undefined ? { at: cmd.at } : {}),
          ...(cmd.snapshotId !== undefined ? { snapshotId: cmd.snapshotId } : {}),
        });
        return restoreFromStore(snap, { vm, toDir, root, ...(storeDir ? { storeDir } : {}) });
      });
      log.info({ snapshotId: result.snapshotId, bytes: result.bytes }, "restored");
      send({ type: "ReplicationRestored", version: 1, commandId, result });
    } finally {
      this.restoring.delete(toDir);
    }
  }

  private restoreRefusal(
    cmd: RestoreVm,
    root: string,
    toDir: string | undefined,
    storeDir: string | undefined,
  ): CommandRefusedError | undefined {
    if (cmd.to.host !== this.o.host)
      return new CommandRefusedError("WRONG_HOST", `this service writes host ${this.o.host}, not ${cmd.to.host}`);
    if (toDir === undefined) return outside(cmd.to.dir, root);
    if (cmd.storeDir !== undefined && storeDir === undefined) return outside(cmd.storeDir, root);
    if (this.restoring.has(toDir))
      return new CommandRefusedError("RESTORE_IN_PROGRESS", `a restore into ${cmd.to.dir} is running; retry later`);
    return undefined;
  }

  /** Accepts a command, then runs it with heartbeats until it settles; tracked for the drain. */
  private async run<T>(commandId: string, send: Send, fn: () => Promise<T>): Promise<T> {
    send({ type: "ReplicationAccepted", version: 1, commandId, host: this.o.host });
    const beat = setInterval(() => send({ type: "ReplicationWorking", version: 1, commandId }), HEARTBEAT_MS);
    const work = fn();
    this.running.add(work);
    try {
      return await work;
    } finally {
      clearInterval(beat);
      this.running.delete(work);
    }
  }

  /** Settles when every sync in flight has finished (drain on stop). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.running]);
  }

  private plan(cmd: ReplicateVm): Plan | CommandRefusedError {
    if (cmd.source.host !== this.o.host)
      return new CommandRefusedError("WRONG_HOST", `this service reads host ${this.o.host}, not ${cmd.source.host}`);
    if (cmd.destination.agent && (this.o.secret ?? "").length < 16)
      return new CommandRefusedError(
        "NO_SECRET",
        `the replication service on ${this.o.host} has no DWCP_SECRET (>= 16 characters, the agent's)`,
      );
    if (cmd.destination.agent && this.o.link === undefined)
      return new CommandRefusedError(
        "NO_TLS",
        `the replication service on ${this.o.host} has no DWCP_TLS_CA/CERT/KEY for agent links ` +
          "(or DWCP_DATA_PLAINTEXT=on for a trusted link)",
      );
    const srcRoot = this.o.root(cmd.source.host);
    const dstRoot = this.o.root(cmd.destination.host);
    const sources: string[] = [];
    for (const p of cmd.source.paths) {
      const abs = inside(srcRoot, p);
      if (abs === undefined) return outside(p, srcRoot);
      sources.push(abs);
    }
    const dir = inside(dstRoot, cmd.destination.dir);
    if (dir === undefined) return outside(cmd.destination.dir, dstRoot);
    return { sources, storePath: join(dir, STORE_DIR), stateDir: join(srcRoot, ".dwcp-repl") };
  }

  private async sync(cmd: ReplicateVm, plan: Plan): Promise<{ result: SyncResult; retention?: RetentionResult }> {
    const agent = cmd.destination.agent;
    const secret = this.o.secret ?? "";
    // A local store is opened per sync and closed after it: this process outlives many syncs.
    const local = async (): Promise<Transport> => {
      const dest = await DestinationAgent.open(plan.storePath);
      return { ...inProcess(dest), close: () => dest.store.close() };
    };
    const link = this.o.link;
    const tls = link?.mode === "tls" ? { tls: { tls: link.tls, destHost: cmd.destination.host } } : {};
    const connect = (): Promise<Transport> => (agent ? connectAgent({ ...agent, secret, ...tls }) : local());
    let out: { result: SyncResult; retention?: RetentionResult } | undefined;
    await replicate({
      vm: cmd.vm,
      sources: plan.sources,
      sourceHost: cmd.source.host,
      destinationHost: cmd.destination.host,
      storePath: plan.storePath,
      stateDir: plan.stateDir,
      log: this.o.log,
      connect,
      ...(cmd.chunkSizeBytes !== undefined ? { chunkSizeBytes: cmd.chunkSizeBytes } : {}),
      ...(cmd.retention ? { retention: cmd.retention, ...(agent ? {} : { localStore: plan.storePath }) } : {}),
      onSync: (result, retention) => (out = { result, ...(retention ? { retention } : {}) }),
    });
    if (out === undefined) throw new NoSyncResultError();
    return out;
  }
}

interface Plan {
  sources: string[];
  storePath: string;
  stateDir: string;
}

function refuse(log: Logger, send: Send, commandId: string, err: CommandRefusedError): void {
  log.warn({ code: err.code }, err.message);
  send({ type: "ReplicationRejected", version: 1, commandId, code: err.code, message: err.message });
}

const outside = (p: string, root: string): CommandRefusedError =>
  new CommandRefusedError("PATH_OUTSIDE_ROOT", `${p} is outside this host's root ${root}`);
