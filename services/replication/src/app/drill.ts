import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createUser } from "@nats-io/nkeys";
import { join } from "node:path";
import { ensureLayout } from "#common/layout.js";
import { connectNats, type Nats } from "#common/nats.js";
import { startNatsServer } from "#common/nats-server.js";
import type { ReplayView } from "../domain/replay/view.js";
import { latestSnapshot } from "../domain/replication/state.js";
import { ReplicationLog } from "../infra/replication-log.js";
import { signingKeyFromSeed } from "../infra/backup-signing.js";
import { backupWith } from "./backup.js";
import { DestinationAgent, inProcess } from "./destination.js";
import { replayWith } from "./replay.js";
import { restoreFromStore } from "./restore.js";
import { restoreLogWith } from "./restore-log.js";
import { replicationLogger, type LogOption } from "./logging.js";
import { syncOnce } from "./sync.js";
import { SnapshotNotFoundError } from "../domain/errors.js";

/** The site that fails: its NATS connection and a way to kill -9 everything it runs. */
export interface PrimarySite {
  nats: Nats;
  kill(): Promise<void>;
}

export interface DrillOptions extends LogOption {
  primary: PrimarySite;
  vm: string;
  /** Volume files on the primary (the replication source). */
  sources: string[];
  /** The DR site's directory: chunk store, log backups, its own nats-server, restored files. */
  drDir: string;
  /** Syncs before the disaster; `change(i)` runs before sync i and once more after the last. */
  syncs: number;
  change: (i: number) => Promise<void>;
}

export interface DrillReport {
  vm: string;
  snapshotId: string;
  takenAt: string;
  disasterAt: string;
  recoveredAt: string;
  /** Writes lost: from the last committed snapshot's read to the disaster, in seconds. */
  rpoSeconds: number;
  /** From the disaster to a verified restored image at the DR site, in seconds. */
  rtoSeconds: number;
  verified: boolean;
  restored: string[];
  /** The DR site's view of the log, folded from the restored backup. */
  view: ReplayView;
}

const sha256 = (path: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });

/**
 * A disaster-recovery drill: replicate into a DR-site store and back the log up after each sync;
 * kill -9 the primary; start a fresh nats-server at the DR site, import the log, fold it, and
 * restore the VM as of its last committed snapshot, verified against the image at that moment.
 */
export async function runDrill(o: DrillOptions): Promise<DrillReport> {
  const logger = replicationLogger(o, { vm: o.vm, drill: true });
  const agent = await DestinationAgent.open(join(o.drDir, "store"), logger);
  const backupFile = join(o.drDir, "log.backup");
  const primaryLog = new ReplicationLog(o.primary.nats);
  const expected = new Map<string, string[]>();
  // The drill's own backup key: the primary signs, the DR site trusts only its public half.
  const key = signingKeyFromSeed(new TextDecoder().decode(createUser().getSeed()));
  const trust = { alg: "ed25519", publicKey: key.publicKey } as const;
  for (let i = 1; i <= o.syncs; i++) {
    await o.change(i);
    const r = await syncOnce({
      vm: o.vm,
      sources: o.sources,
      sourceHost: "primary",
      destinationHost: "dr",
      storePath: agent.store.dir,
      transport: inProcess(agent),
      log: primaryLog,
      stateDir: join(o.drDir, "source-state"),
      logger,
    });
    expected.set(r.snapshotId, await Promise.all(o.sources.map(sha256)));
    await backupWith(o.primary.nats, { out: backupFile, key, logger });
  }
  await o.change(o.syncs + 1); // written after the last snapshot: lost, by definition of RPO
  const disaster = Date.now();
  await o.primary.kill();
  logger.warn("primary killed: recovering at the DR site");

  const dr = await startNatsServer({ storeDir: join(o.drDir, "nats") });
  const nats = await connectNats(dr.url, "dwcp-drill-dr");
  try {
    await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
    await restoreLogWith(nats, { in: backupFile, trust, logger });
    const view = await replayWith(nats);
    const snap = latestSnapshot((await new ReplicationLog(nats).read(o.vm)).state);
    if (!snap) throw new SnapshotNotFoundError(o.vm, "in the DR site's restored log");
    const out = join(o.drDir, "restored");
    await mkdir(out, { recursive: true });
    const r = await restoreFromStore(snap, { vm: o.vm, toDir: out, storeDir: agent.store.dir, logger });
    const got = await Promise.all(r.files.map((f) => sha256(f.path)));
    const recovered = Date.now();
    logger.info({ snapshotId: snap.snapshotId, rtoSeconds: (recovered - disaster) / 1000 }, "drill recovered the VM");
    return {
      vm: o.vm,
      snapshotId: snap.snapshotId,
      takenAt: snap.takenAt,
      disasterAt: new Date(disaster).toISOString(),
      recoveredAt: new Date(recovered).toISOString(),
      rpoSeconds: (disaster - Date.parse(snap.takenAt)) / 1000,
      rtoSeconds: (recovered - disaster) / 1000,
      verified: JSON.stringify(got) === JSON.stringify(expected.get(snap.snapshotId)),
      restored: r.files.map((f) => f.path),
      view,
    };
  } finally {
    await nats.nc.close();
    await dr.stop();
  }
}
