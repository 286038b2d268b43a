import type { DirHandle } from "#native/index.js";
import type { RetentionPolicy } from "../domain/store/manifest.js";
import { ChunkStore } from "../infra/chunk-store.js";
import { applyRetention, type RetentionResult } from "./retention.js";
import type { Transport } from "./destination.js";
import { replicationLogger } from "./logging.js";
import { syncOnce, type SyncOptions, type SyncResult } from "./sync.js";

export interface ReplicateOptions extends Omit<SyncOptions, "transport"> {
  /** Opens a link to the destination for one sync (a new one after a failure). */
  connect: () => Promise<Transport>;
  /** Milliseconds between syncs; undefined: sync once. */
  everyMs?: number;
  retention?: RetentionPolicy;
  /** Local store to apply retention to (in-process destination); remote agents prune themselves. */
  localStore?: string;
  /** `localStore` held by fd (confined by the caller): opened through it instead of by path. */
  localStoreHandle?: DirHandle;
  signal?: AbortSignal;
  onSync?: (r: SyncResult, retention?: RetentionResult) => void;
  onError?: (err: unknown) => void;
  /** Runs one sync; default syncOnce (a running VM's syncs go through syncVmOnce). */
  syncWith?: (o: SyncOptions) => Promise<SyncResult>;
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

async function retain(dir: string, policy: RetentionPolicy, o: ReplicateOptions): Promise<RetentionResult> {
  const store = o.localStoreHandle ? await ChunkStore.openIn(o.localStoreHandle) : await ChunkStore.open(dir);
  try {
    return await applyRetention({ log: o.log, store, vm: o.vm, policy, ...(o.logger ? { logger: o.logger } : {}) });
  } finally {
    await store.close();
  }
}

async function once(o: ReplicateOptions): Promise<void> {
  const transport = await o.connect().catch((err: unknown) => {
    replicationLogger(o, { vm: o.vm, host: o.destinationHost }).warn({ err }, "could not reach the destination");
    throw err;
  });
  try {
    // An agent says where its store is on its host: that is the path the snapshot records.
    const r = await (o.syncWith ?? syncOnce)({ ...o, transport, storePath: transport.store ?? o.storePath });
    const retention = o.retention && o.localStore ? await retain(o.localStore, o.retention, o) : undefined;
    o.onSync?.(r, retention);
  } finally {
    await transport.close?.();
  }
}

/**
 * Syncs once, or every `everyMs` until aborted. With a period, a failed sync is reported and the
 * next one is attempted on schedule: the previous snapshot stays the latest until one commits.
 */
export async function replicate(o: ReplicateOptions): Promise<void> {
  if (o.everyMs === undefined) return once(o);
  const log = replicationLogger(o, { vm: o.vm, host: o.sourceHost });
  log.info({ everyMs: o.everyMs }, "replication loop started");
  while (!o.signal?.aborted) {
    const started = Date.now();
    try {
      await once(o);
    } catch (err) {
      o.onError?.(err); // syncOnce and once() have logged it; the next sync runs on schedule
    }
    await sleep(Math.max(0, o.everyMs - (Date.now() - started)), o.signal);
  }
  log.info("replication loop stopped");
}
