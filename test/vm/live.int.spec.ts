// Live migration of the counting guest (real QEMU, TCG) from mover a to mover b: the disk mirror
// and the migration stream cross b's data channel (mTLS) through tunnels on loopback. One guest
// boots once: a migration whose destination QEMU is killed mid-mirror leaves it running at a, so
// does one cancelled during precopy, then a migration that completes moves it to b, where it
// counts on without a restart.
import { randomBytes } from "node:crypto";
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
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { provision } from "#common/credentials/provision.js";
import type { LinkTls } from "#common/secure-link/tls.js";
import type { VmDefinitionInput } from "#schemas/index.js";
import { capturingLog, linkTlsOf, silentLog } from "#test/support/data-channel.js";
import { startDataServer, type DataServer } from "../../services/mover/src/infra/data-channel/server.js";
import { migrateLive, LiveMigrationError, type LiveReport } from "../../services/mover/src/infra/vm/live.js";
import { IncomingVms, type LiveDestination } from "../../services/mover/src/infra/vm/live-incoming.js";
import { listVms, readRecord, startVm, statusOf, stopVm } from "../../services/mover/src/infra/vm/runner.js";
import { buildGuest, checkCounterImage, serialWhen } from "../support/guest.js";

const dir = mkdtempSync(join(tmpdir(), "dwcp-live-"));
const rootA = join(dir, "a");
const rootB = join(dir, "b");
const stateA = join(dir, "sa");
const stateB = join(dir, "sb");
const MiB = 1024 * 1024;
const secret = randomBytes(32);
let serverB: DataServer;
let tlsA: LinkTls;
let incoming: IncomingVms;

const definition = (root: string): VmDefinitionInput => ({
  version: 1,
  name: "g",
  root,
  memoryMiB: 128,
  disks: [{ id: "disk0", path: "vms/g/disk.img" }],
  boot: { kernel: "boot/vmlinuz", initrd: "boot/initrd.img", append: "console=ttyS0 quiet panic=-1 dwcp.dirty" },
});

const counters = (text: string): number[] => [...text.matchAll(/dwcp-counter (\d+)/g)].map((m) => Number(m[1]));

/** Resolves with the serial console's text once `re` matches it. */
const serial = (state: string, re: RegExp, timeoutMs = 120_000): Promise<string> =>
  serialWhen(state, "g", (text) => re.test(text), `matched ${re}`, timeoutMs);

beforeAll(async () => {
  const guest = buildGuest();
  for (const root of [rootA, rootB]) {
    mkdirSync(join(root, "boot"), { recursive: true });
    copyFileSync(guest.kernel, join(root, "boot/vmlinuz"));
    copyFileSync(guest.initrd, join(root, "boot/initrd.img"));
  }
  mkdirSync(join(rootA, "vms/g"), { recursive: true });
  writeFileSync(join(rootA, "vms/g/disk.img"), "");
  truncateSync(join(rootA, "vms/g/disk.img"), 16 * MiB);
  const pki = await provision(join(dir, "pki"), { hosts: ["a", "b"] });
  tlsA = linkTlsOf(pki, "mover-a");
  serverB = await startDataServer({
    host: "b",
    listenHost: "127.0.0.1",
    listenPort: 0,
    secret,
    roots: [rootB],
    log: silentLog,
    tls: linkTlsOf(pki, "mover-b"),
  });
  incoming = new IncomingVms(stateB, serverB.tunnels, silentLog);
}, 600_000);

afterAll(async () => {
  for (const state of [stateA, stateB])
    for (const vm of await listVms(state)) await stopVm(state, vm.name).catch(() => undefined);
  await serverB?.close();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

const options = (migrationId: string, destination: LiveDestination, reports: LiveReport[]) => ({
  stateDir: stateA,
  name: "g",
  migrationId,
  sourceHost: "a",
  destRoot: rootB,
  destination,
  link: { address: serverB.address, secret, tls: { tls: tlsA, destHost: "b" } },
  reportIntervalMs: 200,
  onReport: (r: LiveReport) => reports.push(r),
  log: process.env.LIVE_DEBUG ? (pino({ level: "info" }) as unknown as typeof silentLog) : silentLog,
});

describe("live migration through the movers' data channel", () => {
  it("keeps the source running through a dead destination and a cancel, then moves the counting guest", async () => {
    await startVm(definition(rootA), stateA);
    await serial(stateA, /dwcp-counter 2\b/);

    // 1. The destination QEMU is killed once the (throttled) mirror has made progress.
    const failing: LiveReport[] = [];
    let killed = false;
    const killing: LiveDestination = {
      prepare: (req) => incoming.prepare(req),
      finish: (id) => incoming.finish(id),
      abort: (id) => incoming.abort(id),
      problem: (id) => incoming.problem(id),
    };
    const failed = migrateLive({
      ...options("live-fail", killing, failing),
      mirrorBytesPerSec: 1 * MiB,
      onReport: (r) => {
        failing.push(r);
        if (r.kind === "mirror" && r.doneBytes > 0 && !killed) {
          killed = true;
          process.kill(readRecord(stateB, "g").pid ?? 0, "SIGKILL");
        }
      },
    });
    const err = await failed.catch((e: unknown) => e);
    expect(err, String(err)).toBeInstanceOf(LiveMigrationError);
    expect(err).toMatchObject({ phase: "mirror", code: "LIVE_MIGRATION_FAILED" });
    expect(killed).toBe(true);
    expect(failing.at(-1)).toMatchObject({ kind: "failed", phase: "mirror", cancelled: false });
    expect((await statusOf(stateA, "g")).state).toBe("running");
    expect(existsSync(join(rootB, "vms/g/disk.img"))).toBe(false);
    expect(await listVms(stateB)).toEqual([]);
    // The source guest still counts.
    const before = Math.max(...counters(readFileSync(join(stateA, "g/serial.log"), "latin1")));
    await serial(stateA, new RegExp(`dwcp-counter ${before + 5}\\b`));

    // 2. A migration cancelled during precopy: migrate_cancel, the mirror dropped, the source runs on.
    const cancel = new AbortController();
    const cancelled: LiveReport[] = [];
    const err2 = await migrateLive({
      ...options("live-cancel", incoming, cancelled),
      signal: cancel.signal,
      onReport: (r) => {
        cancelled.push(r);
        if (r.kind === "precopy") cancel.abort();
      },
    }).catch((e: unknown) => e);
    expect(err2).toMatchObject({ phase: "precopy", code: "LIVE_MIGRATION_CANCELLED" });
    expect(cancelled.at(-1)).toMatchObject({ kind: "failed", cancelled: true });
    expect((await statusOf(stateA, "g")).state).toBe("running");
    expect(existsSync(join(rootB, "vms/g/disk.img"))).toBe(false);
    expect(await listVms(stateB)).toEqual([]);

    // 3. Precopy that cannot converge: the guest rewrites 1 MiB of RAM with random bytes all the
    // time (dwcp.dirty), far more than 1 ms at 16 MiB/s carries. Without a rung left it says so
    // and fails, the source running on.
    const rungsOf = (rs: LiveReport[]) => rs.flatMap((r) => (r.kind === "not-converging" ? [r.rung] : []));
    const stalling = { downtimeLimitMs: 1, bandwidthBytesPerSec: 16 * MiB, stallPasses: 3 };
    const stalled: LiveReport[] = [];
    const err3 = await migrateLive({
      ...options("live-stall", incoming, stalled),
      ...stalling,
      autoConverge: false,
    }).catch((e: unknown) => e);
    expect(err3).toMatchObject({ phase: "precopy", code: "LIVE_MIGRATION_FAILED" });
    expect(String(err3)).toMatch(/precopy does not converge: .*\(allow postcopy/);
    expect(rungsOf(stalled)).toEqual([]);
    expect((await statusOf(stateA, "g")).state).toBe("running");
    expect(await listVms(stateB)).toEqual([]);

    // 4. By default the first rung is auto-converge's throttle (cancelled once it applies).
    const throttled: LiveReport[] = [];
    const stop = new AbortController();
    const err4 = await migrateLive({
      ...options("live-throttle", incoming, throttled),
      ...stalling,
      signal: stop.signal,
      onReport: (r) => {
        throttled.push(r);
        if (r.kind === "not-converging") stop.abort();
      },
    }).catch((e: unknown) => e);
    expect(err4).toMatchObject({ phase: "precopy", code: "LIVE_MIGRATION_CANCELLED" });
    expect(rungsOf(throttled)).toEqual(["auto-converge"]);
    expect((await statusOf(stateA, "g")).state).toBe("running");

    // 5. With postcopy allowed the stalled migration switches to postcopy and completes. Its
    // tunnels compress with zstd (as across a WAN; auto leaves a loopback link raw) and the mirror
    // blocks guest writes (as across a WAN): QEMU's NBD, RAM and postcopy streams pass both.
    const reports: LiveReport[] = [];
    let sourceText = "";
    const sourcePid = readRecord(stateA, "g").pid ?? 0;
    const seen = capturingLog();
    const ok = options("live-ok", incoming, reports);
    const result = await migrateLive({
      ...ok,
      link: { ...ok.link, compression: "zstd" },
      writeBlocking: true,
      log: seen.log,
      ...stalling,
      autoConverge: false,
      postcopy: true,
      onReport: (r) => {
        reports.push(r);
        // The source is paused from here: its console holds its last count.
        if (r.kind === "switchover") sourceText = readFileSync(join(stateA, "g/serial.log"), "latin1");
      },
    });
    const kinds = [...new Set(reports.map((r) => r.kind))];
    // In order: mirror progress (if the mirror took a report interval) before READY, precopy passes
    // and its rungs before switchover.
    expect(kinds.filter((k) => k !== "mirror" && k !== "precopy")).toEqual([
      "started",
      "mirror-ready",
      "not-converging",
      "switchover",
      "completed",
    ]);
    expect(rungsOf(reports)).toEqual(["postcopy"]);
    expect(kinds.indexOf("precopy")).toBeGreaterThan(kinds.indexOf("mirror-ready"));
    const switchover = reports.findIndex((r) => r.kind === "switchover");
    expect(reports.findLastIndex((r) => r.kind === "precopy")).toBeLessThan(switchover);
    const pass = reports.find((r) => r.kind === "precopy");
    expect(pass?.kind === "precopy" && pass.pass >= 1 && pass.remainingBytes >= 0).toBe(true);
    expect(reports.at(-1)?.kind).toBe("completed");
    expect(result.totalMs).toBeGreaterThan(0);
    expect(result.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(result.pausedMs).toBeGreaterThan(0);
    const opened = seen.lines.filter((l) => l.msg === "tunnel open");
    expect(opened.map((l) => [l.channel, l.codec]).sort()).toEqual([
      ["migration", "zstd"],
      ["nbd", "zstd"],
    ]);
    expect(seen.lines.find((l) => l.msg === "disk mirror starting")?.copyMode).toBe("write-blocking");
    expect(() => process.kill(sourcePid, 0)).toThrow();
    expect(existsSync(join(stateA, "g"))).toBe(false);

    // The guest counts on at b from where it was paused at a, without booting again. The console
    // line being written at the pause may be split across the hosts (its start at a, its end at
    // b): then neither console holds that count whole, and b's first whole count is the next one.
    const last = Math.max(...counters(sourceText));
    const text = await serial(stateB, new RegExp(`dwcp-counter ${last + 10}\\b`));
    expect(text).not.toContain("dwcp-guest boot");
    expect(counters(text)[0]).toBeLessThanOrEqual(last + 2);
    expect((await statusOf(stateB, "g")).state).toBe("running");
    await stopVm(stateB, "g");
    const image = checkCounterImage(join(rootB, "vms/g/disk.img"));
    expect(image).toMatchObject({ consistent: true });
    expect(image.header).toBeGreaterThanOrEqual(last + 10);
  }, 240_000);
});
