import type { FileHandle } from "node:fs/promises";
import { join, posix, relative, sep } from "node:path";
import { DwcpError } from "#common/errors.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import type { DirHandle } from "#native/index.js";
import type { ReplicateVm, ReplicationCommand, RestoreVm } from "#schemas/replication.js";
import { PathKindError, PathNotFoundError, PathOutsideRootError, UnknownHostError } from "../domain/errors.js";
import type { Snapshot } from "../domain/replication/state.js";
import { STORE_DIR } from "../infra/chunk-store.js";
import { HEARTBEAT_MS, type Send } from "../infra/commands.js";
import { HostRoot, inside, type HostRoots } from "../infra/host-roots.js";
import type { ReplicationLog } from "../infra/replication-log.js";
import { connectAgent } from "../infra/tcp.js";
import type { LinkSecurity } from "#common/secure-link/tls.js";
import { listVms, parseDefinition, startVm } from "#mover";
import type { VmDefinition } from "#schemas/vm.js";
import { DestinationAgent, inProcess, openAgentStore, type Transport } from "./destination.js";
import { replicate } from "./replicate.js";
import type { RetentionResult } from "./retention.js";
import { pickSnapshot, restoreFromStore } from "./restore.js";
import { readReplication } from "./snapshots.js";
import type { SyncOptions, SyncResult } from "./sync.js";
import { planRunningVm, RunningVmRefusedError, type RunningVmPlan } from "./vm-plan.js";
import { syncVmOnce } from "./vm-sync.js";

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
      | "NO_TLS"
      | "DESTINATION_NOT_LOCAL"
      | "NO_VM_RUNNER"
      | "NO_VM_DEFINITION"
      | "VM_RUNNING",
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
  root: ((host: string) => string) & Partial<Pick<HostRoots, "configured" | "explicit">>;
  /**
   * Whether a host is one of the deployment's (a mover registered it, or its replication service
   * answers): a command naming another is refused (UNKNOWN_HOST). Default: every host is.
   */
  knownHost?: (host: string) => Promise<boolean>;
  /** Where `dwcp vm` records the VMs it runs on this host (`source.running` commands); none: refused. */
  vmStateDir?: string;
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
    if (running !== undefined) {
      const busy = new CommandRefusedError(
        "SYNC_IN_PROGRESS",
        `${vm} is already syncing (command ${running}); retry later`,
      );
      return refuse(log, send, commandId, busy);
    }
    this.syncing.set(vm, commandId);
    let plan: Plan | undefined;
    try {
      const planned = await this.plan(cmd).catch(refusal);
      if (!("sources" in planned)) return refuse(log, send, commandId, planned);
      const ready = (plan = planned);
      log.info({ sources: plan.sources, store: plan.storePath }, "sync started");
      const { result, retention } = await this.run(commandId, send, () => this.sync(cmd, ready));
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
      plan?.close();
      this.syncing.delete(vm);
    }
  }

  /**
   * Restores into a directory under this host's root; one restore per target directory at a time.
   * The target is made and the files created beneath the root's held fd; the store is opened
   * beneath the held root of the host that holds it. A path leaving its root is refused before
   * anything is written.
   */
  private async restoreVm(cmd: RestoreVm, send: Send): Promise<void> {
    const { commandId, vm } = cmd;
    const log = this.o.logger.child({ commandId, vm });
    if (cmd.to.host !== this.o.host) {
      const wrong = new CommandRefusedError(
        "WRONG_HOST",
        `this service writes host ${this.o.host}, not ${cmd.to.host}`,
      );
      return refuse(log, send, commandId, wrong);
    }
    const held: Array<{ close(): void }> = [];
    let key: string | undefined;
    try {
      const planned = await this.restorePlan(cmd, held).catch(refusal);
      if (!("target" in planned)) return refuse(log, send, commandId, planned);
      if (this.restoring.has(planned.key)) {
        const busy = new CommandRefusedError(
          "RESTORE_IN_PROGRESS",
          `a restore into ${cmd.to.dir} is running; retry later`,
        );
        return refuse(log, send, commandId, busy);
      }
      key = planned.key;
      this.restoring.add(key);
      const { snap, target, store, toDir, boot } = planned;
      log.info({ toDir, at: cmd.at, snapshotId: snap.snapshotId, start: boot !== undefined }, "restore started");
      const result = await this.run(commandId, send, async () => {
        const written = await restoreFromStore(snap, { vm, toDir, target, storeHandle: store });
        if (boot === undefined) return written;
        // Written, fsynced and verified: the guest boots from the restored disks.
        const vmStatus = await startVm(boot, this.o.vmStateDir!);
        log.info({ name: vmStatus.name, pid: vmStatus.pid, state: vmStatus.state }, "started the restored VM");
        const started = {
          name: vmStatus.name,
          state: vmStatus.state,
          dir: toDir,
          ...(vmStatus.pid !== undefined ? { pid: vmStatus.pid } : {}),
        };
        return { ...written, started };
      });
      log.info({ snapshotId: result.snapshotId, bytes: result.bytes }, "restored");
      send({ type: "ReplicationRestored", version: 1, commandId, result });
    } finally {
      if (key !== undefined) this.restoring.delete(key);
      for (const h of held) h.close();
    }
  }

  /** Confines and opens what a restore writes and reads; every handle opened goes into `held`. */
  private async restorePlan(
    cmd: RestoreVm,
    held: Array<{ close(): void }>,
  ): Promise<{
    snap: Snapshot;
    target: DirHandle;
    store: DirHandle;
    toDir: string;
    key: string;
    boot: VmDefinition | undefined;
  }> {
    const root = await HostRoot.open(this.o.root(this.o.host), { create: true });
    held.push(root);
    const rel = await root.confine(cmd.to.dir, { mustExist: false });
    const snap = pickSnapshot(await readReplication(this.o.nats, cmd.vm), {
      ...(cmd.at !== undefined ? { at: cmd.at } : {}),
      ...(cmd.snapshotId !== undefined ? { snapshotId: cmd.snapshotId } : {}),
    });
    const boot = cmd.start === true ? await this.bootPlan(snap, root, rel) : undefined;
    // The store: the one the command names under this host's root, else the one the snapshot's
    // event names, under the root of the host it was written on.
    const storeHost = cmd.storeDir === undefined ? snap.destination.host : this.o.host;
    const storeRoot = storeHost === this.o.host ? root : await HostRoot.open(this.o.root(storeHost));
    if (storeRoot !== root) held.push(storeRoot);
    const storeAsked = cmd.storeDir ?? snap.destination.store;
    const storeRel = await storeRoot.confine(storeAsked, { mustExist: true });
    const store = beneath(storeAsked, () => storeRoot.dir.openDir(storeRel));
    held.push(store);
    const target = (await beneathAsync(cmd.to.dir, () => root.dir.makeDirs(rel))).dir;
    held.push(target);
    return { snap, target, store, toDir: posix.join(root.path, rel), key: posix.join(root.real, rel), boot };
  }

  /**
   * The definition a restore with `start` boots: the snapshot's, under this host's root, its disks
   * the restored volumes in `rel`. Refused before anything is written when this service runs no
   * VMs, the snapshot recorded no definition, a VM of that name runs here, or its kernel or initrd
   * is not under this root.
   */
  private async bootPlan(snap: Snapshot, root: HostRoot, rel: string): Promise<VmDefinition> {
    if (this.o.vmStateDir === undefined)
      throw new CommandRefusedError("NO_VM_RUNNER", `the replication service on ${this.o.host} runs no VMs`);
    const recorded = snap.vmDefinition;
    if (recorded === undefined)
      throw new CommandRefusedError(
        "NO_VM_DEFINITION",
        `snapshot ${snap.snapshotId} has no VM definition (only a running VM's replication records one): ` +
          "restore without --start and start the VM with dwcp vm start",
      );
    const current = (await listVms(this.o.vmStateDir)).find((v) => v.name === recorded.name);
    if (current !== undefined && current.state !== "gone")
      throw new CommandRefusedError(
        "VM_RUNNING",
        `a VM named ${recorded.name} is ${current.state} on ${this.o.host}` +
          `${current.pid !== undefined ? ` (pid ${current.pid})` : ""}; stop it first (dwcp vm stop ${recorded.name})`,
      );
    // The kernel and initrd are not in the snapshot: they must be at the same paths under this root.
    for (const f of [recorded.boot?.kernel, recorded.boot?.initrd])
      if (f !== undefined) await root.confine(f, { mustExist: true });
    return parseDefinition({
      ...recorded,
      root: root.real,
      disks: recorded.disks.map((d) => ({ ...d, path: posix.join(rel, posix.basename(d.path)) })),
    });
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

  /**
   * Confines and opens everything a sync touches before it is accepted: each source file beneath
   * this host's held root (read only through that handle), the destination host (one the
   * deployment knows), the local store's directory beneath the destination root's held fd, and
   * this host's fingerprint-cache directory. Throws the refusal; the caller answers it.
   */
  private async plan(cmd: ReplicateVm): Promise<Plan> {
    if (cmd.source.host !== this.o.host)
      throw new CommandRefusedError("WRONG_HOST", `this service reads host ${this.o.host}, not ${cmd.source.host}`);
    if (cmd.destination.agent && (this.o.secret ?? "").length < 16)
      throw new CommandRefusedError(
        "NO_SECRET",
        `the replication service on ${this.o.host} has no DWCP_SECRET (>= 16 characters, the agent's)`,
      );
    if (cmd.destination.agent && this.o.link === undefined)
      throw new CommandRefusedError(
        "NO_TLS",
        `the replication service on ${this.o.host} has no DWCP_TLS_CA/CERT/KEY for agent links ` +
          "(or DWCP_DATA_PLAINTEXT=on for a trusted link)",
      );
    const dest = cmd.destination.host;
    if (dest !== this.o.host && !this.o.root.configured?.(dest) && !((await this.o.knownHost?.(dest)) ?? true))
      throw new UnknownHostError(dest);
    // With roots given (a deployment: hosts are separate machines), a store on another host is
    // reached through its replication agent; a directory standing in for that host here would be
    // a store on this machine that the user believes is elsewhere.
    if (!cmd.destination.agent && dest !== this.o.host && this.o.root.explicit && !this.o.root.configured?.(dest))
      throw new CommandRefusedError(
        "DESTINATION_NOT_LOCAL",
        `${dest} is not a root of the replication service on ${this.o.host} (--roots): replicate to ` +
          `${dest}'s replication agent (--agent HOST:PORT), or to a root this service holds`,
      );
    const plan = new Plan();
    try {
      const src = plan.hold(await HostRoot.open(this.o.root(cmd.source.host)));
      if (cmd.source.running === true) {
        plan.vm = await planRunningVm(this.o.vmStateDir, cmd.vm, src);
        plan.sources.push(...plan.vm.sources);
      }
      for (const p of cmd.source.paths) {
        const rel = await src.confine(p, { mustExist: true });
        plan.sources.push(displayPath(src, p, rel));
        plan.files.push(await beneathAsync(p, () => src.dir.openFile(rel)));
      }
      plan.stateDir = join(src.path, ".dwcp-repl");
      plan.state = plan.hold((await src.dir.makeDirs(".dwcp-repl")).dir);
      if (cmd.destination.agent) {
        // The store is on the agent's host, beneath its own root: the agent opens <dir> there (and
        // confines it), and the snapshot records the store's path as the agent reports it.
        const root = this.o.root(dest);
        const dir = inside(root, cmd.destination.dir);
        if (dir === undefined) throw new PathOutsideRootError(cmd.destination.dir, "is outside the destination's root");
        plan.agentDir = relative(root, dir).split(sep).join(posix.sep);
        plan.storePath = join(dir, STORE_DIR);
        return plan;
      }
      const dst = plan.hold(await HostRoot.open(this.o.root(dest), { create: true }));
      const rel = await dst.confine(cmd.destination.dir, { mustExist: false });
      plan.storePath = posix.join(displayPath(dst, cmd.destination.dir, rel), STORE_DIR);
      const made = await beneathAsync(cmd.destination.dir, () => dst.dir.makeDirs(posix.join(rel, STORE_DIR)));
      plan.store = plan.hold(made.dir);
      return plan;
    } catch (err) {
      plan.close();
      throw err;
    }
  }

  private async sync(cmd: ReplicateVm, plan: Plan): Promise<{ result: SyncResult; retention?: RetentionResult }> {
    const agent = cmd.destination.agent;
    const secret = this.o.secret ?? "";
    // A local store is opened per sync and closed after it: this process outlives many syncs.
    const local = async (): Promise<Transport> => {
      if (plan.store === undefined) throw new CommandRefusedError("PATH_OUTSIDE_ROOT", "no local store was opened");
      const store = plan.store;
      const dest = await beneathAsync(cmd.destination.dir, () => DestinationAgent.openIn(store));
      return { ...inProcess(dest), close: () => dest.store.close() };
    };
    const link = this.o.link;
    const tls = link?.mode === "tls" ? { tls: { tls: link.tls, destHost: cmd.destination.host } } : {};
    const remote = async (a: { host: string; port: number }): Promise<Transport> => {
      const link = await connectAgent({ ...a, secret, ...tls });
      try {
        return { ...link, store: await openAgentStore(link, plan.agentDir, `${a.host}:${a.port}`) };
      } catch (err) {
        await link.close();
        throw err;
      }
    };
    const connect = (): Promise<Transport> => (agent ? remote(agent) : local());
    let out: { result: SyncResult; retention?: RetentionResult } | undefined;
    const vm = plan.vm;
    await replicate({
      vm: cmd.vm,
      sources: plan.sources,
      ...(vm
        ? { syncWith: (so: SyncOptions) => syncVmOnce({ ...so, ...vm }) }
        : { openSource: (_path: string, i: number) => Promise.resolve(plan.take(i)) }),
      sourceHost: cmd.source.host,
      destinationHost: cmd.destination.host,
      storePath: plan.storePath,
      stateDir: plan.stateDir,
      ...(plan.state ? { stateHandle: plan.state } : {}),
      log: this.o.log,
      connect,
      ...(cmd.chunkSizeBytes !== undefined ? { chunkSizeBytes: cmd.chunkSizeBytes } : {}),
      ...(cmd.retention
        ? {
            retention: cmd.retention,
            ...(agent || !plan.store ? {} : { localStore: plan.storePath, localStoreHandle: plan.store }),
          }
        : {}),
      onSync: (result, retention) => (out = { result, ...(retention ? { retention } : {}) }),
    });
    if (out === undefined) throw new NoSyncResultError();
    return out;
  }
}

/** What a sync reads and writes, opened before it is accepted; `close` releases what it still holds. */
class Plan {
  /** Source paths as recorded in the event (under the configured root, as the command named them). */
  readonly sources: string[] = [];
  /** Each source opened beneath the held root; the sync takes each once and closes it. */
  readonly files: Array<FileHandle | undefined> = [];
  /** Where the store is: as the service sees the destination's root (an agent's answer replaces it). */
  storePath = "";
  /** With an agent: the store's directory relative to the agent's root ("" for the root). */
  agentDir = "";
  stateDir = "";
  state: DirHandle | undefined;
  /** The local store's directory, held (undefined with an agent). */
  store: DirHandle | undefined;
  /** A running VM's sync (`source.running`): read through QEMU, no file is opened. */
  vm: RunningVmPlan | undefined;
  private readonly held: Array<{ close(): void }> = [];

  hold<T extends { close(): void }>(h: T): T {
    this.held.push(h);
    return h;
  }

  take(i: number): FileHandle {
    const fh = this.files[i];
    if (fh === undefined) throw new CommandRefusedError("PATH_OUTSIDE_ROOT", `source ${i} was not opened`);
    this.files[i] = undefined;
    return fh;
  }

  close(): void {
    for (const fh of this.files.splice(0)) void fh?.close().catch(() => undefined);
    for (const h of this.held.splice(0)) h.close();
  }
}

/** How a confined path is recorded: under the configured root, as asked when it named a place there. */
function displayPath(root: HostRoot, asked: string, rel: string): string {
  const abs = posix.resolve(root.path, asked);
  return abs === root.path || abs.startsWith(`${root.path}/`) ? abs : posix.join(root.path, rel);
}

/** Runs an open beneath a held root; a symlink or `..` met there is PathOutsideRootError for `asked`. */
function beneath<T>(asked: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw HostRoot.refused(asked, err);
  }
}

async function beneathAsync<T>(asked: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw HostRoot.refused(asked, err);
  }
}

type Refusal =
  | CommandRefusedError
  | PathOutsideRootError
  | PathNotFoundError
  | PathKindError
  | UnknownHostError
  | RunningVmRefusedError;

/** A refusal as a value (answered ReplicationRejected); any other failure is rethrown (ReplicationFailed). */
function refusal(err: unknown): Refusal {
  if (
    err instanceof CommandRefusedError ||
    err instanceof PathOutsideRootError ||
    err instanceof PathNotFoundError ||
    err instanceof UnknownHostError ||
    err instanceof PathKindError ||
    err instanceof RunningVmRefusedError
  )
    return err;
  throw err;
}

/** The reply carries the message (the path as the command gave it); the log has the details. */
function refuse(log: Logger, send: Send, commandId: string, err: Refusal): void {
  log.warn({ code: err.code, err }, err.message);
  send({ type: "ReplicationRejected", version: 1, commandId, code: err.code, message: err.message.slice(0, 1024) });
}
