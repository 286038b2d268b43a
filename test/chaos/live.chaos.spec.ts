// Live migration of a running guest (QEMU, TCG) from mover a to mover b while the data proxy in
// front of b cuts every connection: the disk mirror's NBD stream and QEMU's migration stream both
// ride tunnels over that data channel. A cut mid-mirror and a cut mid-precopy each fail the
// migration cleanly: LiveMigrationFailed with the source still running, the guest counting on at
// a, nothing of the migration left in the source QEMU (jobs, NBD nodes, outgoing migration) and
// no QEMU or disk at b. Once the link heals, the same guest migrates to b and counts on there.
// One guest boots once for the whole file: 128 MiB of RAM and a 16 MiB disk. The data channel runs
// mutual TLS, as a deployment's does (the proxy only cuts and paces it here, it flips no bits), so
// both streams go as sealed records pumped natively at each end: a cut must never be taken for a
// stream's end. Which tunnels a migration opened is read from b's log.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect } from "vitest";
import {
  StartMigration,
  type LiveMigrationOptions,
  type MigrationEvent,
  type VmDefinitionInput,
} from "#schemas/index.js";
import { publishCommand } from "../../cli/client.js";
import { QmpClient } from "../../services/mover/src/infra/vm/qmp.js";
import { liveQmp } from "../../services/mover/src/infra/vm/qmp-live.js";
import { listVms, readRecord, startVm, statusOf, stopVm } from "../../services/mover/src/infra/vm/runner.js";
import { buildGuest, serialWhen } from "../support/guest.js";
import { Chaos } from "./support/harness.js";
import { MiB, waitEvent } from "./support/migrations.js";
import { trackPid } from "./support/procs.js";
import { scenario } from "./support/scenario.js";
import { rng, runSeed } from "./support/seed.js";

const F = import.meta.filename;
let c: Chaos;
const stateOf = (host: string): string => join(c.dir, "vm-state", host);
const destDisk = (): string => join(c.root("b"), "vms/g/disk.img");

const counters = (text: string): number[] => [...text.matchAll(/dwcp-counter (\d+)/g)].map((m) => Number(m[1]));
const lastCount = (host: string): number =>
  Math.max(0, ...counters(readFileSync(join(stateOf(host), "g", "serial.log"), "latin1")));
const counting = (host: string, n: number): Promise<string> =>
  serialWhen(stateOf(host), "g", (text) => Math.max(0, ...counters(text)) >= n, `counted to ${n}`, 120_000);

beforeAll(async () => {
  c = await Chaos.start("live", rng(runSeed()), { DWCP_DATA_PLAINTEXT: "off" });
  const vmArgs = (host: string): string[] => ["--vm-state-dir", stateOf(host)];
  await Promise.all([
    c.startCoordinator("c0"),
    c.startMover("a1", "a", { args: vmArgs("a") }),
    c.startMover("b1", "b", { args: vmArgs("b") }),
  ]);
  const guest = buildGuest();
  // The guest's directory at a, and the one it moves into at b: each with the kernel and initrd
  // at the definition's relative paths (a destination creates only the disks).
  for (const dir of [join(c.root("a"), "vms/g"), join(c.root("b"), "vms/g")]) {
    mkdirSync(join(dir, "boot"), { recursive: true });
    copyFileSync(guest.kernel, join(dir, "boot/vmlinuz"));
    copyFileSync(guest.initrd, join(dir, "boot/initrd.img"));
  }
  // A dense disk (the guest uses its first blocks; the rest is not zero): the mirror copies every
  // byte, so its throttle sets how long it takes and a cut lands inside it. Block 0 stays zero,
  // so the guest starts counting at 1.
  const disk = Buffer.alloc(16 * MiB, 0x5a);
  disk.fill(0, 0, 512);
  writeFileSync(join(c.root("a"), "vms/g/disk.img"), disk);
  const definition: VmDefinitionInput = {
    version: 1,
    name: "g",
    root: join(c.root("a"), "vms/g"),
    memoryMiB: 128,
    disks: [{ id: "disk0", path: "disk.img" }],
    boot: { kernel: "boot/vmlinuz", initrd: "boot/initrd.img", append: guest.append },
  };
  trackPid((await startVm(definition, stateOf("a"))).pid);
  await counting("a", 2);
}, 300_000);

afterEach(() => c?.dataProxy.reset());
afterAll(async () => {
  for (const host of ["a", "b"])
    for (const vm of await listVms(stateOf(host)).catch(() => [])) await stopVm(stateOf(host), vm.name).catch(() => {});
  await c?.stop();
}, 120_000);

const start = async (id: string, live: LiveMigrationOptions): Promise<void> => {
  const cmd = StartMigration.parse({
    type: "StartMigration",
    version: 1,
    commandId: `cmd-${id}`,
    migrationId: id,
    vm: "g",
    mode: "live",
    source: { host: "a", volumes: [] },
    destination: { host: "b", dir: "vms/g" },
    live,
  });
  await publishCommand(c.cli, cmd);
};

/** The tunnels of migration `id` that b's data channel opened so far, and whether each was sealed. */
function tunnelsAtB(id: string): Array<{ channel: string; sealed: boolean }> {
  return c
    .logLines("b1", /"msg":"tunnel open"/)
    .map((l) => JSON.parse(l) as { migrationId?: string; channel?: string; sealed?: boolean })
    .filter((l) => l.migrationId === id)
    .map((l) => ({ channel: l.channel ?? "?", sealed: l.sealed === true }));
}

/** Resolves once b logged the tunnel of `id` on `channel` (its log is the only witness: the link is TLS). */
async function tunnelOpened(id: string, channel: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!tunnelsAtB(id).some((t) => t.channel === channel)) {
    if (Date.now() > deadline) throw new Error(`b opened no ${channel} tunnel of ${id} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Progress = Extract<MigrationEvent, { type: "LiveMigrationProgress" }>;
type Failed = Extract<MigrationEvent, { type: "LiveMigrationFailed" }>;

/**
 * Starts live migration `id` with `live`, cuts the data channel once `when` holds for one of its
 * progress events, waits for its failure and checks that it was a clean one; the link is healed
 * again before returning.
 */
async function cutWhen(
  id: string,
  live: LiveMigrationOptions,
  what: string,
  when: (e: Progress) => boolean,
  figures: Record<string, number | string | boolean>,
  /** Tunnels that must be open through the proxy before the cut (a progress event can precede them). */
  opened: string[] = [],
): Promise<{ progress: Progress; failed: Failed; tunnels: string[] }> {
  await start(id, live);
  const progress = (await waitEvent(c.observer, id, what, (e) => e.type === "LiveMigrationProgress" && when(e)))
    .event as Progress;
  for (const channel of opened) await tunnelOpened(id, channel);
  const countedAtCut = lastCount("a");
  // The tunnels this migration opened through the proxy, all sealed: every one of them is cut.
  const opens = tunnelsAtB(id);
  expect(opens.every((t) => t.sealed)).toBe(true);
  const tunnels = opens.map((t) => t.channel);
  figures["tunnelsCut"] = tunnels.join(" ");
  const cutAt = Date.now();
  c.dataProxy.cut();
  let failed: Failed;
  try {
    failed = (await waitEvent(c.observer, id, "the failure", (e) => e.type === "LiveMigrationFailed", 120_000))
      .event as Failed;
  } finally {
    c.dataProxy.heal();
  }
  figures["cutToRecordedFailureMs"] = Date.parse(failed.at) - cutAt;
  figures["failure"] = failed.message.replaceAll("|", "/").slice(0, 120);
  expect(failed).toMatchObject({ host: "a", code: "LIVE_MIGRATION_FAILED", sourceRunning: true });
  // The guest at a runs on and counts on.
  expect((await statusOf(stateOf("a"), "g")).state).toBe("running");
  await counting("a", countedAtCut + 3);
  // Nothing is left at b: its QEMU is gone and the disk it was given removed.
  expect(await listVms(stateOf("b"))).toEqual([]);
  expect(existsSync(destDisk())).toBe(false);
  // Nothing of the migration is left in the source QEMU.
  const qmp = await QmpClient.connect(readRecord(stateOf("a"), "g").qmp);
  try {
    expect(await liveQmp(qmp, "query-block-jobs")).toEqual([]);
    const nodes = await liveQmp(qmp, "query-named-block-nodes", { flat: true });
    expect(nodes.map((n) => n["node-name"]).filter((n) => n.startsWith("live-"))).toEqual([]);
    expect(["none", "failed", "cancelled"]).toContain((await liveQmp(qmp, "query-migrate")).status ?? "none");
  } finally {
    qmp.close();
  }
  return { progress, failed, tunnels };
}

describe("live migration under a data-channel cut", () => {
  scenario(F, "live: data channel cut mid-mirror: fails cleanly, the source runs on", async ({ seed, figures }) => {
    const id = `live-cut-mirror-${seed}`;
    // The mirror's own throttle (1 MiB/s) keeps it from READY for ~16 s, but QEMU copies up to
    // 16 MiB per step before it sleeps the throttle off: the proxy's cap (512 KiB/s) keeps the
    // disk's bytes on the wire for ~32 s, so the cut lands with NBD writes in flight even when
    // the progress report that triggers it comes late (on a loaded machine QMP answered a
    // report's query after ~8 s, when 2 MiB/s had carried the whole disk).
    c.dataProxy.faults.rateBytesPerSec = MiB / 2;
    let cut;
    try {
      cut = await cutWhen(
        id,
        { mirrorBytesPerSec: MiB },
        "2 MiB mirrored",
        (e) => e.phase === "mirror" && (e.mirrorDoneBytes ?? 0) >= 2 * MiB,
        figures,
      );
    } finally {
      c.dataProxy.faults.rateBytesPerSec = 2 * MiB; // what the scenarios below run with
    }
    const { progress, failed, tunnels } = cut;
    expect(failed.phase).toBe("mirror");
    expect(tunnels).toEqual(["nbd"]);
    expect(progress.mirrorDoneBytes, "the cut lands before the whole disk crossed").toBeLessThan(16 * MiB);
    figures["mirroredAtCutBytes"] = progress.mirrorDoneBytes ?? 0;
  });

  scenario(F, "live: data channel cut mid-precopy: fails cleanly, the source runs on", async ({ seed, figures }) => {
    const id = `live-cut-precopy-${seed}`;
    // The mirror runs free; RAM at 4 MiB/s keeps precopy going for seconds.
    const { progress, failed, tunnels } = await cutWhen(
      id,
      { ramBytesPerSec: 4 * MiB },
      "precopy under way",
      (e) => e.phase === "precopy",
      figures,
      // QEMU reports precopy as soon as `migrate` runs; its stream's tunnel opens a moment later.
      ["migration"],
    );
    expect(failed.phase).toBe("precopy");
    expect(tunnels, "both streams were cut").toEqual(expect.arrayContaining(["nbd", "migration"]));
    figures["ramSentAtCutBytes"] = progress.transferredBytes ?? 0;
  });

  scenario(F, "live: after the cuts the same guest migrates and counts on at b", async ({ seed, figures }) => {
    const id = `live-after-cuts-${seed}`;
    const countedAtA = lastCount("a");
    await start(id, {});
    const done = (
      await waitEvent(
        c.observer,
        id,
        "the outcome",
        (e) => e.type === "LiveMigrationCompleted" || e.type === "LiveMigrationFailed",
        120_000,
      )
    ).event;
    expect(done, JSON.stringify(done)).toMatchObject({ type: "LiveMigrationCompleted", host: "a" });
    if (done.type === "LiveMigrationCompleted")
      Object.assign(figures, { totalMs: done.totalMs, downtimeMs: done.downtimeMs, pausedMs: done.pausedMs });
    trackPid(readRecord(stateOf("b"), "g").pid);
    // The guest counts on at b from where it stopped at a, without a reboot.
    const firstAtB = await counting("b", 1).then((t) => counters(t)[0] ?? 0);
    expect(firstAtB).toBeGreaterThan(countedAtA);
    const text = await counting("b", firstAtB + 5);
    expect(text).not.toContain("dwcp-guest boot");
    expect(existsSync(join(stateOf("a"), "g"))).toBe(false);
  });
});
