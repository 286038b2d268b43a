import { realpath } from "node:fs/promises";
import { join, posix } from "node:path";
import { DwcpError } from "#common/errors.js";
import { readVmRecord, VmError } from "#mover";
import type { SnapshotVmDefinition } from "#schemas/vm.js";
import { HostRoot } from "../infra/host-roots.js";
import type { VmSyncDisk } from "./vm-sync.js";

/** A `source.running` command for a VM this service cannot read through QEMU; nothing was read. */
export class RunningVmRefusedError extends DwcpError {
  readonly retryable = false;
  constructor(
    readonly code: "NO_VM_RUNNER" | "VM_NOT_FOUND" | "VM_OUTSIDE_ROOT",
    message: string,
  ) {
    super(message);
  }
}

/** What a running VM's sync reads: its QMP socket, run directory and disks (confined paths). */
export interface RunningVmPlan {
  qmp: string;
  runDir: string;
  disks: VmSyncDisk[];
  /** The disks' paths as the event records them (under the host root). */
  sources: string[];
  /** The definition without its root (paths stay relative to it): recorded with each snapshot. */
  vmDefinition: SnapshotVmDefinition;
}

/**
 * Finds the VM `vm` among those `dwcp vm` runs under `vmStateDir`: its definition's root must be
 * this host's root and every disk must be confined beneath it (the paths are recorded in the
 * event and restored by name), so a VM record cannot make the service read outside its root.
 */
export async function planRunningVm(vmStateDir: string | undefined, vm: string, src: HostRoot): Promise<RunningVmPlan> {
  if (vmStateDir === undefined)
    throw new RunningVmRefusedError("NO_VM_RUNNER", "this replication service has no VM state directory");
  let record;
  try {
    record = readVmRecord(vmStateDir, vm);
  } catch (err) {
    if (err instanceof VmError) throw new RunningVmRefusedError("VM_NOT_FOUND", err.message);
    throw err;
  }
  const def = record.definition;
  const root = await realpath(def.root).catch(() => def.root);
  if (root !== src.real)
    throw new RunningVmRefusedError(
      "VM_OUTSIDE_ROOT",
      `VM ${vm} has its disks under ${def.root}, not under this host's root ${src.path}`,
    );
  const disks: VmSyncDisk[] = [];
  const sources: string[] = [];
  for (const d of def.disks) {
    const rel = await src.confine(d.path, { mustExist: true });
    // Reopened by the sync beneath the root this command holds, no symlink followed.
    const openImage = () =>
      src.dir.openFile(rel).catch((err: unknown) => {
        throw HostRoot.refused(d.path, err);
      });
    disks.push({ node: d.id, path: d.path, format: d.format, openImage });
    sources.push(posix.join(src.path, rel));
  }
  const { root: _root, ...vmDefinition } = def;
  return { qmp: record.qmp, runDir: join(vmStateDir, vm), disks, sources, vmDefinition };
}
