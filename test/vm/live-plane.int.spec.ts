// Live migration through the whole control plane: a StartMigration with mode "live" (or `dwcp
// migrate --live`) becomes one work item to the source mover, which runs the migration of a real
// counting guest (QEMU, TCG) to the destination mover and records every phase as its own signed
// event. Movers a and b run VMs (--vm-state-dir); mover c runs none and fails a live migration
// at prepare. One guest boots once: a migration whose destination mover is killed mid-mirror
// leaves it running at a (and the restarted destination mover removes the QEMU its predecessor
// left), a cancelled one too, then `dwcp migrate --live --wait` moves it to b, where it counts on.
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStore, type StoredEvent } from "#common/event-store.js";
import { subjects } from "#common/layout.js";
import { EventVerifier } from "#common/signing.js";
import type { VmDefinitionInput } from "#schemas/index.js";
import { foldTrusted } from "../../services/coordinator/src/domain/migration/index.js";
import { listVms, readRecord, startVm, statusOf, stopVm } from "../../services/mover/src/infra/vm/runner.js";
import { buildGuest, checkCounterImage, serialWhen } from "../support/guest.js";
import { cliOf, startTestStack, waitForEvent } from "../support/stack.js";

const MiB = 1024 * 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;
const vmStates = mkdtempSync(join(tmpdir(), "dwcp-live-plane-"));
const stateOf = (host: string): string => join(vmStates, host);
const moverArgs = (host: string): string[] => (host === "c" ? [] : ["--vm-state-dir", stateOf(host)]);

const counters = (text: string): number[] => [...text.matchAll(/dwcp-counter (\d+)/g)].map((m) => Number(m[1]));
const counting = (host: string, n: number): Promise<string> =>
  serialWhen(stateOf(host), "g", (text) => Math.max(0, ...counters(text)) >= n, `counted to ${n}`, 120_000);
const lastCount = (host: string): number =>
  Math.max(...counters(readFileSync(join(stateOf(host), "g", "serial.log"), "latin1")));

beforeAll(async () => {
  stack = await startTestStack({
    hosts: ["a", "b", "c"],
    moverArgs,
    // A killed destination mover's successor takes the host over within a second or two.
    env: { DWCP_LEASE_HEARTBEAT_MS: "500" },
  });
  const guest = buildGuest();
  // The guest's directory at a, and the directory it moves into at b: each with the kernel and
  // initrd at the definition's relative paths (a destination creates only the disks).
  for (const dir of [join(stack.root("a"), "vms/g"), join(stack.root("b"), "vms/g")]) {
    mkdirSync(join(dir, "boot"), { recursive: true });
    copyFileSync(guest.kernel, join(dir, "boot/vmlinuz"));
    copyFileSync(guest.initrd, join(dir, "boot/initrd.img"));
  }
  const disk = join(stack.root("a"), "vms/g/disk.img");
  writeFileSync(disk, "");
  truncateSync(disk, 16 * MiB);
  const definition: VmDefinitionInput = {
    version: 1,
    name: "g",
    root: join(stack.root("a"), "vms/g"),
    memoryMiB: 128,
    disks: [{ id: "disk0", path: "disk.img" }],
    boot: { kernel: "boot/vmlinuz", initrd: "boot/initrd.img", append: guest.append },
  };
  await startVm(definition, stateOf("a"));
  await counting("a", 2);
}, 600_000);

afterAll(async () => {
  for (const host of ["a", "b"])
    for (const vm of await listVms(stateOf(host)).catch(() => [])) await stopVm(stateOf(host), vm.name).catch(() => {});
  await stack?.cleanup();
  rmSync(vmStates, { recursive: true, force: true });
}, 120_000);

const command = (id: string, source: string, live: Record<string, unknown> = {}) => ({
  type: "StartMigration",
  version: 1,
  commandId: id,
  vm: "g",
  mode: "live",
  source: { host: source, volumes: [] },
  destination: { host: "b", dir: "vms/g" },
  live,
});

const events = async (id: string): Promise<StoredEvent[]> => {
  const verifier = EventVerifier.fromTrustFile(stack.credentials.trustFile);
  return new EventStore(stack.nats.js, stack.nats.jsm, { trust: { insecure: false, verifier } }).read(id);
};

describe("live migration through the control plane", () => {
  it("a mover without VMs fails a live migration at prepare, signed by its host", async () => {
    await stack.nats.js.publish(subjects.startMigration, JSON.stringify(command("live-c", "c")));
    const failed = await waitForEvent(stack, "live-c", (e) => e.event.type === "LiveMigrationFailed", 60_000);
    expect(failed.event).toMatchObject({ host: "c", code: "LIVE_MIGRATION_FAILED", phase: "prepare" });
    expect((failed.event as { message: string }).message).toMatch(/--vm-state-dir/);
    const stored = await events("live-c");
    expect(stored.map((e) => e.provenance)).toMatchObject([
      { kind: "signed", principal: { role: "coordinator" } },
      { kind: "signed", principal: { role: "mover-c" } },
    ]);
    expect(foldTrusted("live-c", stored)).toMatchObject({ status: "failed", reason: "LIVE_MIGRATION_FAILED" });
  }, 90_000);

  it("a destination mover killed mid-mirror: the source runs on; its successor removes the QEMU left", async () => {
    // A throttled mirror (1 MiB/s of a 16 MiB disk) is still running when b's mover dies.
    await stack.nats.js.publish(
      subjects.startMigration,
      JSON.stringify(command("live-kill", "a", { mirrorBytesPerSec: MiB })),
    );
    await waitForEvent(
      stack,
      "live-kill",
      (e) => e.event.type === "LiveMigrationProgress" && e.event.phase === "mirror",
      120_000,
    );
    const orphan = readRecord(stateOf("b"), "g").pid ?? 0;
    await stack.movers.get("b")?.stop("SIGKILL");
    const failed = await waitForEvent(stack, "live-kill", (e) => e.event.type === "LiveMigrationFailed", 120_000);
    expect(failed.event).toMatchObject({ host: "a", code: "LIVE_MIGRATION_FAILED", sourceRunning: true });
    expect((await statusOf(stateOf("a"), "g")).state).toBe("running");
    const before = lastCount("a");
    await counting("a", before + 5);
    // The QEMU b's mover started outlives it (paused, waiting); its successor removes it and its disk.
    await stack.startMover("b", [...moverArgs("b"), "--standby"]);
    expect(() => process.kill(orphan, 0)).toThrow();
    expect(await listVms(stateOf("b"))).toEqual([]);
    expect(existsSync(join(stack.root("b"), "vms/g/disk.img"))).toBe(false);
  }, 300_000);

  it("a cancelled live migration rolls back and is recorded as cancelled", async () => {
    const dwcp = cliOf(stack);
    await stack.nats.js.publish(
      subjects.startMigration,
      JSON.stringify(command("live-cancel", "a", { mirrorBytesPerSec: MiB })),
    );
    await waitForEvent(
      stack,
      "live-cancel",
      (e) => e.event.type === "LiveMigrationProgress" && e.event.phase === "mirror",
      120_000,
    );
    const r = await dwcp("cancel", "live-cancel");
    expect(r.code, r.stderr).toBe(0);
    const failed = await waitForEvent(stack, "live-cancel", (e) => e.event.type === "LiveMigrationFailed", 120_000);
    expect(failed.event).toMatchObject({ host: "a", code: "LIVE_MIGRATION_CANCELLED", sourceRunning: true });
    expect(foldTrusted("live-cancel", await events("live-cancel"))).toMatchObject({ status: "cancelled" });
    expect((await statusOf(stateOf("a"), "g")).state).toBe("running");
    expect(await listVms(stateOf("b"))).toEqual([]);
    expect(existsSync(join(stack.root("b"), "vms/g/disk.img"))).toBe(false);
  }, 300_000);

  it("dwcp migrate --live --wait moves the counting guest to b, where it counts on without a restart", async () => {
    const dwcp = cliOf(stack);
    const sourcePid = readRecord(stateOf("a"), "g").pid ?? 0;
    const countedAtA = lastCount("a");
    const r = await dwcp(
      "migrate",
      "--live",
      "--vm",
      "g",
      "--from",
      "a",
      "--to",
      "b:vms/g",
      "--id",
      "live-ok",
      "--wait",
      "--json",
    );
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ migrationId: "live-ok", state: "completed" });
    const stored = await events("live-ok");
    const types = stored.map((e) => e.event.type);
    expect(types[0]).toBe("MigrationRequested");
    expect(types[1]).toBe("LiveMigrationStarted");
    expect(types.at(-1)).toBe("LiveMigrationCompleted");
    expect(types.slice(2, -1).every((t) => t === "LiveMigrationProgress")).toBe(true);
    const phases = stored.flatMap((e) => (e.event.type === "LiveMigrationProgress" ? [e.event.phase] : []));
    expect(phases).toContain("mirror-ready");
    expect(phases.indexOf("mirror-ready")).toBeLessThan(phases.lastIndexOf("switchover"));
    const byMoverA = stored
      .slice(1)
      .every((e) => e.provenance?.kind === "signed" && e.provenance.principal.role === "mover-a");
    expect(byMoverA).toBe(true);
    const done = stored.at(-1)?.event;
    expect(done).toMatchObject({ type: "LiveMigrationCompleted", host: "a" });
    // The whole disk, and what the guest wrote again while it was mirrored.
    expect((done as { mirrorBytes: number }).mirrorBytes).toBeGreaterThanOrEqual(16 * MiB);
    expect(foldTrusted("live-ok", stored)).toMatchObject({ status: "completed", live: { phase: "completed" } });

    // The source QEMU is gone; the guest counts on at b from where it stopped at a.
    expect(() => process.kill(sourcePid, 0)).toThrow();
    expect(existsSync(join(stateOf("a"), "g"))).toBe(false);
    const firstAtB = await counting("b", 1).then((t) => counters(t)[0] ?? 0);
    expect(firstAtB).toBeGreaterThan(countedAtA);
    const text = await counting("b", firstAtB + 10);
    expect(text).not.toContain("dwcp-guest boot");
    expect((await statusOf(stateOf("b"), "g")).state).toBe("running");
    expect(readRecord(stateOf("b"), "g").incoming).toBeUndefined();
    await stopVm(stateOf("b"), "g");
    const image = checkCounterImage(join(stack.root("b"), "vms/g/disk.img"));
    expect(image).toMatchObject({ consistent: true });
    expect(image.header).toBeGreaterThanOrEqual(firstAtB + 10);

    const bad = await dwcp("migrate", "--live", "--vm", "g", "--from", "a:x.img", "--to", "b:vms/g3");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--from names the source host only/);
  }, 300_000);
});
