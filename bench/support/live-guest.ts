import { execFileSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, rmSync, truncateSync, writeSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import type { VmDefinitionInput } from "#schemas/index.js";
import { listVms, readRecord, stopVm } from "../../services/mover/src/infra/vm/runner.js";
import { buildGuest, serialWhen } from "../../test/support/guest.js";

// The guest of the live-migration bench: test/support/guest.ts's counting guest (its kernel and
// initramfs cached there) on a raw disk of `diskGiB` with `fillMiB` of mixed data beyond the
// counter's log, so that a mirror has real work. The lab keeps every state directory it hands
// out and stops every VM under them at the end, whatever happened.

export const MiB = 1024 * 1024;
/** Where the mixed data starts: far past the log the counter writes from block 1 on. */
export const FILL_OFFSET = 64 * MiB;
export const DISK_PATH = "vms/g/disk.img";

export interface LabOptions {
  memoryMiB: number;
  diskGiB: number;
  fillMiB: number;
}

/** The counting guest's console: the counts it printed. */
export const counters = (text: string): number[] => [...text.matchAll(/dwcp-counter (\d+)/g)].map((m) => Number(m[1]));

export class Lab {
  readonly template: string;
  private readonly stateDirs = new Set<string>();
  private readonly kernel: string;
  private readonly initrd: string;

  constructor(
    readonly dir: string,
    readonly o: LabOptions,
  ) {
    const guest = buildGuest();
    this.kernel = guest.kernel;
    this.initrd = guest.initrd;
    this.template = join(dir, "template.img");
    writeDisk(this.template, o);
  }

  /** A directory the definition's paths are relative to, with the guest's kernel and initrd. */
  root(name: string): string {
    const root = join(this.dir, name);
    mkdirSync(join(root, "boot"), { recursive: true });
    mkdirSync(join(root, "vms/g"), { recursive: true });
    if (!existsSync(join(root, "boot/vmlinuz"))) copyFileSync(this.kernel, join(root, "boot/vmlinuz"));
    if (!existsSync(join(root, "boot/initrd.img"))) copyFileSync(this.initrd, join(root, "boot/initrd.img"));
    return root;
  }

  /** A state directory for VMs, stopped at cleanup. */
  stateDir(name: string): string {
    const dir = join(this.dir, name);
    this.stateDirs.add(dir);
    return dir;
  }

  /** A fresh copy of the template disk (sparse) under `root`. */
  freshDisk(root: string): string {
    const path = join(root, DISK_PATH);
    rmSync(path, { force: true });
    execFileSync("cp", ["--sparse=always", this.template, path]);
    return path;
  }

  definition(root: string, memoryMiB = this.o.memoryMiB): VmDefinitionInput {
    return {
      version: 1,
      name: "g",
      root,
      memoryMiB,
      disks: [{ id: "disk0", path: DISK_PATH }],
      boot: { kernel: "boot/vmlinuz", initrd: "boot/initrd.img", append: "console=ttyS0 quiet panic=-1" },
    };
  }

  /** Resolves with the console text once the guest of `stateDir` has counted to at least `n`. */
  counted(stateDir: string, n: number, timeoutMs = 180_000): Promise<string> {
    return serialWhen(stateDir, "g", (text) => counters(text).some((c) => c >= n), `counted to ${n}`, timeoutMs);
  }

  /** Stops every VM under every state directory handed out (QMP quit, else SIGKILL by its pid). */
  async stopAll(): Promise<void> {
    for (const dir of this.stateDirs) {
      for (const vm of await listVms(dir).catch(() => [])) {
        let pid: number | undefined;
        try {
          pid = readRecord(dir, vm.name).pid;
        } catch {
          pid = undefined;
        }
        await Promise.race([
          stopVm(dir, vm.name),
          new Promise((_, reject) => setTimeout(() => reject(new Error("quit timed out")), 15_000).unref()),
        ]).catch(() => {
          if (pid === undefined) return;
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // already gone
          }
        });
      }
    }
  }
}

/**
 * A sparse raw disk of diskGiB with fillMiB of mixed data from FILL_OFFSET: per MiB, a random
 * quarter, a quarter of repeated text, a quarter of a short repeating pattern and a quarter of
 * zeros written as data (an allocated extent, as a guest's file system leaves them).
 */
export function writeDisk(path: string, o: LabOptions): void {
  const size = o.diskGiB * 1024 * MiB;
  if (FILL_OFFSET + o.fillMiB * MiB > size)
    throw new Error(`--fill-mib ${o.fillMiB} does not fit a ${o.diskGiB} GiB disk past ${FILL_OFFSET / MiB} MiB`);
  const fd = openSync(path, "w");
  try {
    truncateSync(path, size);
    const text = Buffer.from("Dec  6 07:15:17 host kernel: [ 1234.5678] virtio_blk virtio2: [vda] 4194304 512-byte\n");
    const buf = Buffer.alloc(MiB);
    const q = MiB / 4;
    for (let m = 0; m < o.fillMiB; m++) {
      randomFillSync(buf, 0, q);
      for (let i = q; i < 2 * q; i += text.length) text.copy(buf, i, 0, Math.min(text.length, 2 * q - i));
      buf.fill(m & 0xff, 2 * q, 3 * q);
      buf.fill(0, 3 * q, MiB);
      writeSync(fd, buf, 0, MiB, FILL_OFFSET + m * MiB);
    }
  } finally {
    closeSync(fd);
  }
}

/** A TCP port free on 127.0.0.1 now (QEMU takes it a moment later). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}
