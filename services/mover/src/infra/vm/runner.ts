import { spawn } from "node:child_process";
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { DwcpError } from "#common/errors.js";
import { openRootDir } from "#native/index.js";
import { VmDefinition, type VmState } from "#schemas/index.js";
import { QmpClient } from "./qmp.js";

// Starts, stops, lists and adopts QEMU VMs from their definitions. QEMU is never given a path
// under a root: every disk, kernel and initrd is opened here beneath the root's held fd (no
// symlink followed, no `..`) and handed to QEMU as an inherited fd (`-add-fd` for disks,
// /proc/self/fd for the kernel and initrd). Each VM has a run directory (its QMP socket, serial
// log, pid file and state.json) under the state directory the caller names.

export class VmError extends DwcpError {
  readonly code = "VM_ERROR";
  readonly retryable = false;
}

/** What state.json holds: enough for another process (`dwcp vm list/stop`) to find the VM. */
const VmRecord = z.object({
  version: z.literal(1),
  definition: VmDefinition,
  qmp: z.string().min(1).max(4096),
  serial: z.string().max(4096).optional(),
  pid: z.number().int().positive().optional(),
  adopted: z.boolean(),
  startedAt: z.iso.datetime(),
  /** Started paused for an incoming live migration, by the mover process `moverPid`; its guest has not run here yet. */
  incoming: z.object({ moverPid: z.number().int().positive() }).optional(),
});
export type VmRecord = z.infer<typeof VmRecord>;

export interface VmStatus {
  name: string;
  state: VmState;
  pid?: number;
  qmp: string;
  adopted: boolean;
}

export const runDirOf = (stateDir: string, name: string): string => join(stateDir, name);

/** Parses a definition (from a file or a command), with every problem named. */
export function parseDefinition(input: unknown): VmDefinition {
  const r = VmDefinition.safeParse(input);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${i.path.join(".") || "(definition)"}: ${i.message}`);
  throw new VmError(`invalid VM definition: ${problems.join("; ")}`);
}

export interface StartOptions {
  /**
   * Start paused, waiting for an incoming migration (`-S -incoming defer`: the caller sets the
   * migration up over QMP and runs `cont` once it is over). Default false.
   */
  incoming?: boolean;
}

/** The QEMU command line for `def`, with disk i at fd 3 + i and the kernel, initrd after them. */
export function qemuArgs(def: VmDefinition, runDir: string, opts: StartOptions = {}): string[] {
  const m = def.machine;
  const args = [
    "-name",
    def.name,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-machine",
    `${m.type},accel=${m.accel}`,
    "-smp",
    String(m.cpus),
    "-m",
    String(def.memoryMiB),
    "-qmp",
    `unix:${join(runDir, "qmp.sock")},server=on,wait=off`,
    "-serial",
    `file:${join(runDir, "serial.log")}`,
    "-pidfile",
    join(runDir, "qemu.pid"),
    "-no-reboot",
  ];
  def.disks.forEach((d, i) => {
    args.push("-add-fd", `fd=${3 + i},set=${i + 1},opaque=${d.id}`);
    args.push("-blockdev", `driver=file,filename=/dev/fdset/${i + 1},node-name=${d.id}-file`);
    args.push("-blockdev", `driver=${d.format},file=${d.id}-file,node-name=${d.id}`);
    args.push("-device", `virtio-blk-pci,drive=${d.id},id=${d.id}-dev`);
  });
  if (def.boot) {
    const fd = 3 + def.disks.length;
    args.push("-kernel", `/proc/self/fd/${fd}`);
    if (def.boot.initrd !== undefined) args.push("-initrd", `/proc/self/fd/${fd + 1}`);
    if (def.boot.append !== "") args.push("-append", def.boot.append);
  }
  args.push("-nic", def.network === "user" ? "user,model=virtio-net-pci" : "none");
  if (opts.incoming === true) args.push("-S", "-incoming", "defer");
  return args;
}

/** Opens `rel` beneath `root` with no symlink followed; a refusal names the path, not the cause's internals. */
async function openUnder(root: ReturnType<typeof openRootDir>, rel: string, write: boolean): Promise<FileHandle> {
  try {
    return await root.openFile(rel, { flags: write ? constants.O_RDWR : constants.O_RDONLY });
  } catch (err) {
    throw new VmError(`cannot open ${rel} beneath ${root.path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Starts the VM `input` defines (checked against VmDefinition) under `stateDir`; resolves once QMP
 * answers.
 */
export async function startVm(input: unknown, stateDir: string, opts: StartOptions = {}): Promise<VmStatus> {
  const def = parseDefinition(input);
  const runDir = runDirOf(stateDir, def.name);
  if (existsSync(join(runDir, "state.json"))) {
    const current = await statusOf(stateDir, def.name);
    if (current.state !== "gone") throw new VmError(`VM ${def.name} is already ${current.state} (pid ${current.pid})`);
  }
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const root = openRootDir(def.root);
  const files: FileHandle[] = [];
  try {
    for (const d of def.disks) files.push(await openUnder(root, d.path, true));
    if (def.boot) {
      files.push(await openUnder(root, def.boot.kernel, false));
      if (def.boot.initrd !== undefined) files.push(await openUnder(root, def.boot.initrd, false));
    }
    const log = openSync(join(runDir, "qemu.log"), "a", 0o600);
    const child = spawn(def.machine.binary, qemuArgs(def, runDir, opts), {
      stdio: ["ignore", log, log, ...files.map((f) => f.fd)],
      detached: true,
    });
    closeSync(log);
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const spawned = await new Promise<Error | undefined>((r) => {
      child.once("spawn", () => r(undefined));
      child.once("error", (err) => r(err));
    });
    if (spawned) throw new VmError(`cannot start ${def.machine.binary}: ${spawned.message}`, { cause: spawned });
    child.unref();
    const qmp = join(runDir, "qmp.sock");
    const client = await Promise.race([
      waitForQmp(qmp, 30_000),
      exited.then((code) => {
        const why = readFileSync(join(runDir, "qemu.log"), "utf8").slice(-2_000);
        throw new VmError(`QEMU exited with ${code} before QMP answered: ${why}`);
      }),
    ]);
    try {
      const status = await client.execute("query-status");
      const record: VmRecord = {
        version: 1,
        definition: def,
        qmp,
        serial: join(runDir, "serial.log"),
        ...(child.pid === undefined ? {} : { pid: child.pid }),
        adopted: false,
        startedAt: new Date().toISOString(),
        ...(opts.incoming === true ? { incoming: { moverPid: process.pid } } : {}),
      };
      writeRecord(runDir, record);
      return {
        name: def.name,
        state: stateOf(status.status),
        ...(record.pid ? { pid: record.pid } : {}),
        qmp,
        adopted: false,
      };
    } finally {
      client.close();
    }
  } finally {
    await Promise.all(files.map((f) => f.close()));
    root.close();
  }
}

/** Records a VM started outside dwcp, given its QMP socket: it answers, so it is taken on. */
export async function adoptVm(input: unknown, qmp: string, stateDir: string, pid?: number): Promise<VmStatus> {
  const def = parseDefinition(input);
  const client = await QmpClient.connect(qmp);
  try {
    const status = await client.execute("query-status");
    const runDir = runDirOf(stateDir, def.name);
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
    const record: VmRecord = {
      version: 1,
      definition: def,
      qmp,
      ...(pid === undefined ? {} : { pid }),
      adopted: true,
      startedAt: new Date().toISOString(),
    };
    writeRecord(runDir, record);
    return { name: def.name, state: stateOf(status.status), ...(pid ? { pid } : {}), qmp, adopted: true };
  } finally {
    client.close();
  }
}

/** Stops the VM (QMP quit) and resolves once QEMU has exited; its run directory is removed. */
export async function stopVm(stateDir: string, name: string): Promise<void> {
  const record = readRecord(stateDir, name);
  let client: QmpClient;
  try {
    client = await QmpClient.connect(record.qmp, 5_000);
  } catch {
    // Already gone: only the record is left.
    rmSync(runDirOf(stateDir, name), { recursive: true, force: true });
    return;
  }
  const closed = client.closed();
  await client.execute("quit").catch(() => undefined);
  await closed;
  if (record.pid !== undefined) await waitGone(record.pid, 30_000);
  rmSync(runDirOf(stateDir, name), { recursive: true, force: true });
}

/** Every VM recorded under `stateDir`, each asked over QMP how it is. */
export async function listVms(stateDir: string): Promise<VmStatus[]> {
  if (!existsSync(stateDir)) return [];
  const names = readdirSync(stateDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(stateDir, d.name, "state.json")))
    .map((d) => d.name)
    .sort();
  return Promise.all(names.map((n) => statusOf(stateDir, n)));
}

export async function statusOf(stateDir: string, name: string): Promise<VmStatus> {
  const record = readRecord(stateDir, name);
  const base = { name, qmp: record.qmp, adopted: record.adopted, ...(record.pid ? { pid: record.pid } : {}) };
  try {
    const client = await QmpClient.connect(record.qmp, 5_000);
    try {
      return { ...base, state: stateOf((await client.execute("query-status")).status) };
    } finally {
      client.close();
    }
  } catch {
    return { ...base, state: "gone" };
  }
}

export function readRecord(stateDir: string, name: string): VmRecord {
  const file = join(runDirOf(stateDir, name), "state.json");
  if (!existsSync(file)) throw new VmError(`no VM named ${name} under ${stateDir}`);
  const r = VmRecord.safeParse(JSON.parse(readFileSync(file, "utf8")));
  if (!r.success) throw new VmError(`${file} is not a VM record: ${r.error.message}`);
  return r.data;
}

/** state.json replaced whole (a reader never sees half a record). */
/** An incoming VM's guest runs: it is this host's VM from now on. */
export function markArrived(stateDir: string, name: string): void {
  const { incoming: _incoming, ...record } = readRecord(stateDir, name);
  writeRecord(runDirOf(stateDir, name), record);
}

function writeRecord(runDir: string, record: VmRecord): void {
  const file = join(runDir, "state.json");
  writeFileSync(`${file}.tmp`, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

function stateOf(status: string): VmState {
  if (status === "running") return "running";
  if (status === "paused" || status === "suspended" || status === "inmigrate" || status === "postmigrate")
    return "paused";
  if (status === "prelaunch") return "starting";
  return "stopped";
}

async function waitForQmp(path: string, timeoutMs: number): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await QmpClient.connect(path, Math.max(1_000, deadline - Date.now()));
    } catch (err) {
      if (Date.now() > deadline)
        throw new VmError(`QMP at ${path} did not answer within ${timeoutMs} ms`, { cause: err });
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Whether process `pid` exists (one of another user's counts: signalling it is refused, EPERM). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new VmError(`QEMU (pid ${pid}) still runs ${timeoutMs} ms after quit`);
}
