import { closeSync, openSync, statSync, ftruncateSync } from "node:fs";
import { join } from "node:path";
import type { VmDefinitionInput } from "#schemas/index.js";
import { QmpClient, type QmpEvent } from "../../services/mover/src/infra/vm/qmp.js";
import { liveQmp } from "../../services/mover/src/infra/vm/qmp-live.js";
import type { MirrorCopyMode } from "../../services/mover/src/domain/live/mirror-mode.js";
import { readRecord, startVm, stopVm } from "../../services/mover/src/infra/vm/runner.js";
import { DISK_PATH, freePort } from "./live-guest.js";
import type { LiveFigures, LiveRequest } from "./live-dwcp.js";

// The baseline: QEMU's own live migration with storage, as libvirt's `--copy-storage-all` drives
// it, between two QEMUs on loopback TCP with nothing in between. The destination starts paused
// with `-incoming defer` and exports its new (sparse) disk writable over NBD (on the emulated WAN,
// in the destination's site and across the link); the source mirrors
// to it (blockdev-mirror sync=full) until READY, migrates RAM with the capabilities and parameters
// dwcp's engine sets, then ends the mirror without pivot (block-job-cancel) and the destination
// stops its NBD server and runs. Completion is taken from QMP events, as libvirt does.

/** As live.ts: QEMU's default max-bandwidth (32 MiB/s) would throttle the link. */
const UNLIMITED_BYTES_PER_SEC = 64 * 1024 ** 3;
const DOWNTIME_LIMIT_MS = 300;

/** Resolves with the first event `pick` accepts; rejects after `timeoutMs`. */
function nextEvent(
  qmp: QmpClient,
  pick: (e: QmpEvent) => boolean,
  what: string,
  timeoutMs = 600_000,
): Promise<QmpEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${what} within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = qmp.onEvent((e) => {
      if (!pick(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

const migrationIs = (status: string) => (e: QmpEvent) =>
  e.event === "MIGRATION" && (e.data?.["status"] === status || e.data?.["status"] === "failed");

/**
 * `destHost`: the address the destination QEMU listens on and the source reaches it at (its
 * site's, on the emulated WAN, where `destDef`'s binary starts QEMU in that site). Default
 * 127.0.0.1. `copyMode`: the mirror's (write-blocking across a WAN, as dwcp's engine chooses
 * there and libvirt's --copy-storage-synchronous-writes asks for). Default background.
 */
export async function migrateWithQemu(
  req: LiveRequest,
  destDef: VmDefinitionInput,
  { destHost = "127.0.0.1", copyMode = "background" }: { destHost?: string; copyMode?: MirrorCopyMode } = {},
): Promise<LiveFigures> {
  const source = await QmpClient.connect(readRecord(req.stateDir, "g").qmp);
  let dest: QmpClient | undefined;
  try {
    const t0 = performance.now();
    const size = statSync(join(readRecord(req.stateDir, "g").definition.root, DISK_PATH)).size;
    const fd = openSync(join(req.destRoot, DISK_PATH), "wx");
    ftruncateSync(fd, size);
    closeSync(fd);
    await startVm(destDef, req.destStateDir, { incoming: true });
    dest = await QmpClient.connect(readRecord(req.destStateDir, "g").qmp);
    const nbdPort = await freePort();
    const migrationPort = await freePort();
    await liveQmp(dest, "migrate-set-capabilities", {
      capabilities: [
        { capability: "events", state: true },
        { capability: "late-block-activate", state: true },
      ],
    });
    await liveQmp(dest, "nbd-server-start", {
      addr: { type: "inet", data: { host: destHost, port: String(nbdPort) } },
    });
    await liveQmp(dest, "block-export-add", {
      type: "nbd",
      id: "bench-disk0",
      "node-name": "disk0",
      name: "disk0",
      writable: true,
    });
    await liveQmp(dest, "migrate-incoming", { uri: `tcp:${destHost}:${migrationPort}` });

    const mirror = performance.now();
    const ready = nextEvent(source, (e) => e.event === "BLOCK_JOB_READY", "BLOCK_JOB_READY");
    await liveQmp(source, "blockdev-add", {
      driver: "nbd",
      "node-name": "bench-nbd",
      server: { type: "inet", host: destHost, port: String(nbdPort) },
      export: "disk0",
    });
    await liveQmp(source, "blockdev-mirror", {
      "job-id": "bench-mirror",
      device: "disk0",
      target: "bench-nbd",
      sync: "full",
      "copy-mode": copyMode,
    });
    await ready;
    const readyAt = performance.now();

    await liveQmp(source, "migrate-set-capabilities", {
      capabilities: [
        { capability: "events", state: true },
        { capability: "auto-converge", state: false },
      ],
    });
    await liveQmp(source, "migrate-set-parameters", {
      "downtime-limit": DOWNTIME_LIMIT_MS,
      "max-bandwidth": UNLIMITED_BYTES_PER_SEC,
    });
    let stopAt = 0;
    const offStop = source.onEvent((e) => {
      if (e.event === "STOP" && stopAt === 0) stopAt = performance.now();
    });
    const sourceDone = nextEvent(source, migrationIs("completed"), "source migration completed");
    const destDone = nextEvent(dest, migrationIs("completed"), "destination migration completed");
    await liveQmp(source, "migrate", { uri: `tcp:${destHost}:${migrationPort}` });
    const done = await sourceDone;
    offStop();
    if (done.data?.["status"] !== "completed") throw new Error("QEMU's migration failed at the source");
    const info = await liveQmp(source, "query-migrate");

    const ended = nextEvent(
      source,
      (e) => e.event === "BLOCK_JOB_COMPLETED" || e.event === "BLOCK_JOB_CANCELLED",
      "the mirror's end",
    );
    await liveQmp(source, "block-job-cancel", { device: "bench-mirror" });
    const end = await ended;
    if (end.event !== "BLOCK_JOB_COMPLETED" || end.data?.["error"] !== undefined)
      throw new Error(`the mirror did not end in sync: ${JSON.stringify(end)}`);
    if ((await destDone).data?.["status"] !== "completed")
      throw new Error("QEMU's migration failed at the destination");
    await liveQmp(dest, "nbd-server-stop");
    await dest.execute("cont");
    const status = await dest.execute("query-status");
    if (status.status !== "running") throw new Error(`the destination guest is ${status.status} after cont`);
    const running = performance.now();
    await liveQmp(source, "blockdev-del", { "node-name": "bench-nbd" });
    source.close();
    await stopVm(req.stateDir, "g");
    return {
      totalMs: running - t0,
      fromMirrorMs: running - mirror,
      mirrorMs: readyAt - mirror,
      downtimeMs: info.downtime ?? 0,
      pausedMs: running - (stopAt || running),
      ramTransferredBytes: info.ram?.transferred ?? 0,
    };
  } finally {
    source.close();
    dest?.close();
  }
}
