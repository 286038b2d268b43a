import type { SnapshotsPruned } from "../../../../schemas/replication.js";
import { referencedChunks, selectPrunable, type Manifest, type RetentionPolicy } from "../domain/store/manifest.js";
import type { ChunkStore } from "../infra/chunk-store.js";
import type { ReplicationLog } from "../infra/replication-log.js";

export interface RetentionResult {
  pruned: string[];
  chunksDeleted: number;
}

/**
 * Chunks and manifests younger than this are never collected: a sync may be about to use them.
 * An agent trusts its own touches for half of it (ChunkStore.has), so a shorter grace is only safe
 * when retention runs on the agent's own ChunkStore (as the tests do).
 */
export const DEFAULT_GRACE_MS = 10 * 60_000;

/**
 * Applies a retention policy to one VM: records SnapshotsPruned, then deletes the pruned
 * manifests and every chunk that no remaining manifest of any VM references. A chunk a running
 * sync has just stored or found (dedup touches it) is inside the grace period; a commit whose
 * chunk was collected anyway is refused by the destination (CHUNKS_MISSING) and resent.
 */
export async function applyRetention(o: { log: ReplicationLog; store: ChunkStore; vm: string; policy: RetentionPolicy; nowMs?: number; graceMs?: number }): Promise<RetentionResult> {
  const nowMs = o.nowMs ?? Date.now();
  const grace = o.graceMs ?? DEFAULT_GRACE_MS;
  const { state, seq } = await o.log.read(o.vm);
  const pruned = selectPrunable(state.snapshots, o.policy, nowMs);
  const keptIds = new Set(state.snapshots.map((s) => s.snapshotId).filter((id) => !pruned.includes(id)));
  const manifests = await o.store.listManifests();
  // This VM's manifests that no kept snapshot names: pruned ones, and leftovers of syncs that
  // wrote a manifest but never committed (once they are older than the grace period).
  const drop = manifests.filter((f) => f.vm === o.vm && !keptIds.has(f.snapshotId) && (pruned.includes(f.snapshotId) || nowMs - f.mtimeMs > grace));
  const keep = manifests.filter((f) => !drop.includes(f));
  const kept: Manifest[] = await Promise.all(keep.map((f) => o.store.readManifest(f.rel)));
  const referenced = referencedChunks(kept);
  // A chunk stored as a delta needs its base: keep the whole chain.
  const queue = [...referenced];
  for (let h = queue.pop(); h !== undefined; h = queue.pop()) {
    const base = await o.store.deltaBase(h);
    if (base === undefined || referenced.has(base)) continue;
    referenced.add(base);
    queue.push(base);
  }
  const garbage = (await o.store.listChunks()).filter((c) => (c.hash === undefined || !referenced.has(c.hash)) && nowMs - c.mtimeMs > grace);
  if (pruned.length > 0) {
    const event: SnapshotsPruned = { type: "SnapshotsPruned", version: 1, vm: o.vm, at: new Date(nowMs).toISOString(), snapshotIds: pruned, chunksDeleted: garbage.length };
    await o.log.append(o.vm, [event], `prune-${o.vm}-${pruned.join(".").slice(0, 200)}`, seq);
  }
  for (const f of drop) await o.store.deleteManifest(f.rel);
  for (const c of garbage) await o.store.deleteFile(c.path);
  return { pruned, chunksDeleted: garbage.length };
}
