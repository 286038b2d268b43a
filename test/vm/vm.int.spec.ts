import { spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VmDefinitionInput } from "#schemas/index.js";
import {
  adoptVm,
  listVms,
  parseDefinition,
  startVm,
  statusOf,
  stopVm,
  VmError,
} from "../../services/mover/src/infra/vm/runner.js";
import { buildGuest, checkCounterImage, serialWhen } from "../support/guest.js";

// Real QEMU (TCG) running the counting guest of test/support/guest.ts.

const dir = mkdtempSync(join(tmpdir(), "dwcp-test-vm-"));
const root = join(dir, "root");
const stateDir = join(dir, "state");
const MiB = 1024 * 1024;

const definition = (name: string, disk = `vms/${name}/disk.img`): VmDefinitionInput => ({
  version: 1,
  name,
  root,
  memoryMiB: 128,
  disks: [{ id: "disk0", path: disk }],
  boot: { kernel: "boot/vmlinuz", initrd: "boot/initrd.img", append: "console=ttyS0 quiet panic=-1" },
});

function disk(name: string, bytes = 16 * MiB): string {
  const file = join(root, "vms", name, "disk.img");
  mkdirSync(join(root, "vms", name), { recursive: true });
  writeFileSync(file, "");
  truncateSync(file, bytes);
  return file;
}

/** Resolves with the serial console's text once `re` matches it (the guest's own output). */
const serial = (name: string, re: RegExp, timeoutMs = 120_000): Promise<string> =>
  serialWhen(stateDir, name, (text) => re.test(text), `matched ${re}`, timeoutMs);

beforeAll(() => {
  const guest = buildGuest();
  mkdirSync(join(root, "boot"), { recursive: true });
  copyFileSync(guest.kernel, join(root, "boot/vmlinuz"));
  copyFileSync(guest.initrd, join(root, "boot/initrd.img"));
}, 600_000);

afterAll(async () => {
  for (const vm of await listVms(stateDir)) await stopVm(stateDir, vm.name).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe("QEMU VMs from definitions", () => {
  it("starts a guest that counts on its console, reports it running, stops it into a consistent image", async () => {
    const img = disk("g1");
    const started = await startVm(definition("g1"), stateDir);
    expect(started).toMatchObject({ name: "g1", adopted: false });
    await serial("g1", /dwcp-counter 20\b/);
    expect(await statusOf(stateDir, "g1")).toMatchObject({ state: "running" });
    expect((await listVms(stateDir)).map((v) => v.name)).toEqual(["g1"]);

    await stopVm(stateDir, "g1");
    expect(() => process.kill(started.pid ?? 0, 0)).toThrow();
    expect(await listVms(stateDir)).toEqual([]);
    const image = checkCounterImage(img);
    expect(image).toMatchObject({ consistent: true });
    expect(image.header).toBeGreaterThanOrEqual(20);

    // The next boot continues from the disk's count.
    await startVm(definition("g1"), stateDir);
    const text = await serial("g1", new RegExp(`dwcp-counter ${image.header + 5}\\b`));
    expect(text).toContain(`dwcp-guest boot seq=${image.header}`);
    await stopVm(stateDir, "g1");
  }, 300_000);

  it("refuses a definition that reaches outside its root, before QEMU starts", async () => {
    expect(() => parseDefinition(definition("g2", "../outside.img"))).toThrow(VmError);
    expect(() => parseDefinition({ ...definition("g2"), name: "a.b" })).toThrow(/VM names/);
    expect(() => parseDefinition({ ...definition("g2"), memoryMiB: 1 << 30 })).toThrow(/memoryMiB/);
    // A symlink under the root to a file outside it is not followed.
    writeFileSync(join(dir, "outside.img"), "");
    truncateSync(join(dir, "outside.img"), MiB);
    mkdirSync(join(root, "vms/g2"), { recursive: true });
    symlinkSync(join(dir, "outside.img"), join(root, "vms/g2/disk.img"));
    await expect(startVm(definition("g2"), stateDir)).rejects.toThrow(/cannot open vms\/g2\/disk.img/);
    expect(existsSync(join(stateDir, "g2", "state.json"))).toBe(false);
    expect(existsSync(join(stateDir, "g2", "qemu.pid"))).toBe(false);
  });

  it("adopts a VM started outside dwcp by its QMP socket, and stops it", async () => {
    const img = disk("g3");
    const qmp = join(dir, "g3.qmp");
    const child = spawn(
      "qemu-system-x86_64",
      ["-nodefaults", "-no-user-config", "-display", "none", "-machine", "q35,accel=tcg", "-m", "128"].concat([
        "-qmp",
        `unix:${qmp},server=on,wait=off`,
        "-drive",
        `file=${img},format=raw,if=virtio`,
      ]),
      { stdio: "ignore" },
    );
    const exited = new Promise((r) => child.once("exit", r));
    const deadline = Date.now() + 60_000;
    while (!existsSync(qmp) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const adopted = await adoptVm(definition("g3"), qmp, stateDir, child.pid);
    expect(adopted).toMatchObject({ name: "g3", adopted: true, state: "running" });
    expect(await listVms(stateDir)).toEqual([expect.objectContaining({ name: "g3", adopted: true })]);
    await stopVm(stateDir, "g3");
    await exited;
    expect(child.exitCode).toBe(0);
  }, 120_000);
});

describe("dwcp vm", () => {
  const BIN = join(import.meta.dirname, "../../bin/dwcp.mjs");
  const dwcp = (...argv: string[]) =>
    spawnSync(process.execPath, [BIN, "vm", ...argv, "--state-dir", join(dir, "cli-state")], {
      encoding: "utf8",
      timeout: 120_000,
    });

  it("starts, lists and stops a VM from a definition file; a bad definition is a usage error", () => {
    disk("c1");
    const file = join(dir, "c1.json");
    writeFileSync(file, JSON.stringify(definition("c1")));
    const start = dwcp("start", "--definition", file, "--json");
    expect(start.stderr).toBe("");
    expect(JSON.parse(start.stdout)).toMatchObject({ name: "c1", state: "running", adopted: false });
    const list = dwcp("list", "--json");
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ name: "c1", state: "running" })]);
    const pid = (JSON.parse(start.stdout) as { pid: number }).pid;
    const stop = dwcp("stop", "c1");
    expect([stop.status, stop.stdout.trim()]).toEqual([0, "c1 stopped"]);
    expect(() => process.kill(pid, 0)).toThrow();

    writeFileSync(file, JSON.stringify({ ...definition("c1"), disks: [{ id: "disk0", path: "/etc/passwd" }] }));
    const bad = dwcp("start", "--definition", file);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("disks.0.path: must be a relative path beneath a root");
    expect(dwcp("frobnicate").status).toBe(2);
  }, 180_000);
});

describe("the counter image checker", () => {
  it("tells an image of one moment from one assembled from two", () => {
    const img = Buffer.alloc(64 * 512);
    const write = (block: number, magic: string, n: number): void => {
      img.write(`${magic}${String(n).padStart(16, "0")}\n`, block * 512, "latin1");
    };
    for (let i = 1; i <= 10; i++) write(i, "DWCPLOG1", i);
    write(0, "DWCPCTR1", 10);
    const file = join(dir, "checker.img");
    const check = (): ReturnType<typeof checkCounterImage> => {
      writeFileSync(file, img);
      return checkCounterImage(file);
    };
    expect(check()).toEqual({ consistent: true, header: 10, log: 10 });
    write(11, "DWCPLOG1", 11); // between the two writes of step 11
    expect(check()).toMatchObject({ consistent: true, header: 10, log: 11 });
    write(0, "DWCPCTR1", 14); // a header read later than the log
    expect(check()).toMatchObject({ consistent: false, reason: "the header says 14, the log ends at 11" });
    write(0, "DWCPCTR1", 11);
    write(13, "DWCPLOG1", 13); // a log block read later than the rest
    expect(check()).toMatchObject({ consistent: false });
  });
});
