import { constants } from "node:fs";
import { dirname, join } from "node:path";
import type { Logger } from "#common/logger.js";
import { openRootDir } from "#native/index.js";
import type { VmDefinition } from "#schemas/index.js";
import type { TunnelTable } from "../data-channel/tunnel.js";
import { QmpClient } from "./qmp.js";
import { liveQmp } from "./qmp-live.js";
import {
  isAlive,
  listVms,
  markArrived,
  parseDefinition,
  readRecord,
  runDirOf,
  startVm,
  stopVm,
  VmError,
} from "./runner.js";

// The destination half of a live migration. prepare() creates the disks beneath the destination
// root (never over an existing file), starts QEMU from the same definition paused with
// `-incoming defer`, exports each disk writable over NBD on a unix socket, listens for the
// migration stream on another, and lets tunnels of this migration from its source host reach the
// two. finish() waits for the incoming stream to complete, stops the NBD server and runs the
// guest. abort() quits QEMU and removes what prepare() created.

/** Tunnel channels a live migration uses. */
export const LIVE_CHANNELS = { nbd: "nbd", migration: "migration" } as const;

export interface IncomingRequest {
  migrationId: string;
  sourceHost: string;
  /** The VM's definition with `root` the destination directory. */
  definition: VmDefinition;
  /** Size in bytes of each disk (by id), as the source guest sees it. */
  diskSizes: Record<string, number>;
  /** The source may switch to postcopy (both QEMUs need the capability). */
  postcopy?: boolean;
}

/** What the source side calls on the destination (in process, or through the mover RPC). */
export interface LiveDestination {
  prepare(req: IncomingRequest): Promise<void>;
  /** Once the source's migration completed and its mirror ended: the guest runs here. */
  finish(migrationId: string): Promise<void>;
  /** Undefined while the destination QEMU of the migration runs; else why not. */
  problem(migrationId: string): Promise<string | undefined>;
  /** Quit the destination QEMU and remove its disks; safe at any phase and more than once. */
  abort(migrationId: string): Promise<void>;
}

interface Incoming {
  req: IncomingRequest;
  revoke: () => void;
  /** Disk paths prepare() created (removed again on abort). */
  created: string[];
  started: boolean;
}

/** A destination mover's incoming live migrations, by migration id. */
export class IncomingVms implements LiveDestination {
  private readonly incoming = new Map<string, Incoming>();

  constructor(
    private readonly stateDir: string,
    private readonly tunnels: TunnelTable,
    private readonly log: Logger,
  ) {}

  async prepare(req: IncomingRequest): Promise<void> {
    if (this.incoming.has(req.migrationId)) throw new VmError(`live migration ${req.migrationId} is already prepared`);
    const def = parseDefinition(req.definition);
    if (def.disks.some((d) => d.format !== "raw"))
      throw new VmError("live migration supports raw disks; convert qcow2 disks first");
    const entry: Incoming = { req: { ...req, definition: def }, revoke: () => undefined, created: [], started: false };
    this.incoming.set(req.migrationId, entry);
    const log = this.log.child({ migrationId: req.migrationId, vm: def.name });
    try {
      await createDisks(def, req.diskSizes, entry.created);
      await startVm(def, this.stateDir, { incoming: true });
      entry.started = true;
      const runDir = runDirOf(this.stateDir, def.name);
      const nbd = join(runDir, "nbd.sock");
      const migration = join(runDir, "migration.sock");
      await this.withQmp(def.name, async (qmp) => {
        await liveQmp(qmp, "migrate-set-capabilities", {
          capabilities: [
            { capability: "events", state: true },
            // Images stay inactive until `cont`: the source's mirror writes until then.
            { capability: "late-block-activate", state: true },
            { capability: "postcopy-ram", state: req.postcopy === true },
          ],
        });
        await liveQmp(qmp, "nbd-server-start", { addr: { type: "unix", data: { path: nbd } } });
        for (const d of def.disks)
          await liveQmp(qmp, "block-export-add", {
            type: "nbd",
            id: `live-${d.id}`,
            "node-name": d.id,
            name: d.id,
            writable: true,
          });
        await liveQmp(qmp, "migrate-incoming", { uri: `unix:${migration}` });
      });
      entry.revoke = this.tunnels.allow(req.migrationId, req.sourceHost, {
        [LIVE_CHANNELS.nbd]: nbd,
        [LIVE_CHANNELS.migration]: migration,
      });
      log.info({ disks: def.disks.length, memoryMiB: def.memoryMiB }, "live migration: destination ready");
    } catch (err) {
      await this.abort(req.migrationId);
      throw err;
    }
  }

  async finish(migrationId: string, timeoutMs = 60_000): Promise<void> {
    const entry = this.entryOf(migrationId);
    const name = entry.req.definition.name;
    await this.withQmp(name, async (qmp) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const info = await liveQmp(qmp, "query-migrate");
        // In postcopy the guest runs here while its last pages still arrive (faulted in on demand).
        if (info.status === "completed" || info.status === "postcopy-active") break;
        if (info.status === "failed" || info.status === "cancelled")
          throw new VmError(`the incoming migration ${info.status}: ${info["error-desc"] ?? "no reason given"}`);
        if (Date.now() > deadline) throw new VmError(`the incoming migration did not complete within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await liveQmp(qmp, "nbd-server-stop");
      await qmp.execute("cont");
      const status = await qmp.execute("query-status");
      if (status.status !== "running") throw new VmError(`the destination guest is ${status.status} after cont`);
    });
    markArrived(this.stateDir, name);
    entry.revoke();
    this.incoming.delete(migrationId);
    this.log.info({ migrationId, vm: name }, "live migration: guest runs at the destination");
  }

  problem(migrationId: string): Promise<string | undefined> {
    const entry = this.incoming.get(migrationId);
    if (entry === undefined) return Promise.resolve(`no live migration ${migrationId} is prepared here`);
    if (!entry.started) return Promise.resolve(undefined);
    const pid = readRecord(this.stateDir, entry.req.definition.name).pid;
    if (pid === undefined || isAlive(pid)) return Promise.resolve(undefined);
    return Promise.resolve(`the destination QEMU (pid ${pid}) is gone`);
  }

  async abort(migrationId: string): Promise<void> {
    const entry = this.incoming.get(migrationId);
    if (entry === undefined) return;
    entry.revoke();
    const def = entry.req.definition;
    if (entry.started) await stopOrKill(this.stateDir, def.name);
    removeDisks(def, entry.created);
    this.incoming.delete(migrationId);
    this.log.info({ migrationId, vm: def.name }, "live migration: destination cleaned up");
  }

  /**
   * Removes what incoming migrations of a mover process that is gone left (it died before their
   * guest ran here): each QEMU still waiting for its stream is stopped and the disks it was given,
   * which prepare created, are removed. Those of a live mover (the holder, beside a standby) stay.
   * Resolves with the VMs removed.
   */
  async sweep(): Promise<string[]> {
    const removed: string[] = [];
    for (const vm of await listVms(this.stateDir)) {
      let record;
      try {
        record = readRecord(this.stateDir, vm.name);
      } catch {
        continue;
      }
      if (record.incoming === undefined || isAlive(record.incoming.moverPid)) continue;
      const def = record.definition;
      const log = this.log.child({ vm: vm.name, root: def.root });
      try {
        await stopOrKill(this.stateDir, vm.name);
        removeDisks(
          def,
          def.disks.map((d) => d.path),
        );
        removed.push(vm.name);
        log.warn("live migration: removed a destination guest an earlier mover left");
      } catch (err) {
        log.error({ err }, "live migration: could not remove a destination guest an earlier mover left");
      }
    }
    return removed;
  }

  /** Aborts every migration prepared here whose guest does not run here yet (the mover stops). */
  async abortAll(): Promise<void> {
    for (const id of [...this.incoming.keys()]) await this.abort(id).catch(() => undefined);
  }

  private entryOf(migrationId: string): Incoming {
    const entry = this.incoming.get(migrationId);
    if (entry === undefined) throw new VmError(`no live migration ${migrationId} is prepared here`);
    return entry;
  }

  private async withQmp<T>(name: string, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const qmp = await QmpClient.connect(readRecord(this.stateDir, name).qmp);
    try {
      return await fn(qmp);
    } finally {
      qmp.close();
    }
  }
}

/** Creates each disk beneath the root, sparse, at its size; refuses to replace an existing file. */
async function createDisks(def: VmDefinition, sizes: Record<string, number>, created: string[]): Promise<void> {
  const root = openRootDir(def.root);
  try {
    for (const d of def.disks) {
      const size = sizes[d.id];
      if (size === undefined || !Number.isSafeInteger(size) || size <= 0) throw new VmError(`no size for disk ${d.id}`);
      const parent = dirname(d.path);
      if (parent !== ".") (await root.makeDirs(parent)).dir.close();
      let file;
      try {
        file = await root.openFile(d.path, { flags: constants.O_RDWR | constants.O_CREAT | constants.O_EXCL });
      } catch (err) {
        throw new VmError(`cannot create disk ${d.path} beneath ${def.root}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      created.push(d.path);
      try {
        await file.truncate(size);
      } finally {
        await file.close();
      }
    }
  } finally {
    root.close();
  }
}

function removeDisks(def: VmDefinition, created: readonly string[]): void {
  if (created.length === 0) return;
  const root = openRootDir(def.root);
  try {
    for (const path of created) {
      const parent = dirname(path);
      const name = path.slice(path.lastIndexOf("/") + 1);
      if (parent === ".") {
        root.unlink(name, { ignoreMissing: true });
        continue;
      }
      const dir = root.openDir(parent);
      try {
        dir.unlink(name, { ignoreMissing: true });
      } finally {
        dir.close();
      }
    }
  } finally {
    root.close();
  }
}

/** Quits the VM; one whose QMP no longer answers (killed, hung) is killed by its recorded pid. */
async function stopOrKill(stateDir: string, name: string): Promise<void> {
  let pid: number | undefined;
  try {
    pid = readRecord(stateDir, name).pid;
  } catch {
    return;
  }
  try {
    await Promise.race([
      stopVm(stateDir, name),
      new Promise((_, reject) => setTimeout(() => reject(new VmError("quit timed out")), 10_000).unref()),
    ]);
  } catch {
    if (pid !== undefined) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await stopVm(stateDir, name).catch(() => undefined);
  }
}
