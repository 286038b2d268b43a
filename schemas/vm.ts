import { z } from "zod";
import { MAX_PATH_CHARS } from "./common.js";
import { VmName } from "./names.js";

// A VM a mover runs with QEMU: what to start and where its disks are. Every path is relative to
// one of the mover's roots (resolved beneath the root's held handle, like a migration's volumes),
// so a spec cannot point QEMU at a file outside them.

/** A path under a mover root: relative, no `..` component, no NUL. */
export const RootRelativePath = z
  .string()
  .min(1)
  .max(MAX_PATH_CHARS)
  .refine((p) => !p.startsWith("/") && !p.split("/").includes("..") && !p.includes("\0"), {
    message: "must be a relative path beneath a root, without '..'",
  });

export const VmDisk = z.object({
  /** QEMU's node name for the disk (`-blockdev node-name=`), also its id in events. */
  id: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, "disk ids are 1-31 characters of a-z 0-9 - starting with a letter"),
  path: RootRelativePath,
  format: z.enum(["raw", "qcow2"]).default("raw"),
});

/** Extra machine arguments are a closed set: nothing that opens files, sockets or devices. */
export const VmMachine = z.object({
  binary: z.string().min(1).max(MAX_PATH_CHARS).default("qemu-system-x86_64"),
  /** `-machine` type. */
  type: z.enum(["q35", "pc"]).default("q35"),
  /** `tcg` runs anywhere (CI); `kvm` needs /dev/kvm. */
  accel: z.enum(["tcg", "kvm"]).default("tcg"),
  cpus: z.number().int().min(1).max(64).default(1),
});

/** Direct kernel boot (the test guest), paths under the same root as the disks. */
export const VmKernelBoot = z.object({
  kernel: RootRelativePath,
  initrd: RootRelativePath.optional(),
  append: z.string().max(1024).default(""),
});

export const VmDefinition = z.object({
  version: z.literal(1),
  name: VmName,
  /** The mover root (its directory as given with --root) the paths are under. */
  root: z.string().min(1).max(MAX_PATH_CHARS),
  machine: VmMachine.prefault({}),
  memoryMiB: z
    .number()
    .int()
    .min(16)
    .max(1024 * 1024),
  disks: z.array(VmDisk).min(1).max(16),
  boot: VmKernelBoot.optional(),
  network: z.enum(["none", "user"]).default("none"),
});
export type VmDefinition = z.infer<typeof VmDefinition>;

/**
 * A VM's definition as its snapshots record it: no `root` (a host's directory, meaningless on
 * another host), every path relative to the root it ran under. A restore with `--start` puts the
 * restored disks beneath the restoring host's root and the kernel and initrd at the same relative
 * paths beneath it.
 */
export const SnapshotVmDefinition = VmDefinition.omit({ root: true });
export type SnapshotVmDefinition = z.infer<typeof SnapshotVmDefinition>;
export type VmDefinitionInput = z.input<typeof VmDefinition>;

/** What `dwcp vm list` reports per VM. */
export const VmState = z.enum(["starting", "running", "paused", "stopped", "gone"]);
export type VmState = z.infer<typeof VmState>;
