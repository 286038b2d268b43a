import { referencedChunks, selectPrunable, type Manifest, type RetentionPolicy } from "../domain/store/manifest.js";
import type { IndexEntry } from "../domain/store/pack.js";
import type { ChunkStore } from "../infra/chunk-store.js";
import type { Pack } from "../infra/pack-file.js";
import type { ReplicationLog } from "../infra/replication-log.js";
import { replicationLogger, type LogOption } from "./logging.js";

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
export async function applyRetention(
  o: LogOption & {
    log: ReplicationLog;
    store: ChunkStore;
    vm: string;
    policy: RetentionPolicy;
    nowMs?: number;
    graceMs?: number;
  },
): Promise<RetentionResult> {
  const log = replicationLogger(o, { vm: o.vm });
  const nowMs = o.nowMs ?? Date.now();
  const grace = o.graceMs ?? DEFAULT_GRACE_MS;
  const { state, seq } = await o.log.read(o.vm);
  const pruned = selectPrunable(state.snapshots, o.policy, nowMs);
  const keptIds = new Set(state.snapshots.map((s) => s.snapshotId).filter((id) => !pruned.includes(id)));
  const manifests = await o.store.listManifests();
  // This VM's manifests that no kept snapshot names: pruned ones, and leftovers of syncs that
  // wrote a manifest but never committed (once they are older than the grace period).
  const drop = manifests.filter(
    (f) => f.vm === o.vm && !keptIds.has(f.snapshotId) && (pruned.includes(f.snapshotId) || nowMs - f.mtimeMs > grace),
  );
  const keep = manifests.filter((f) => !drop.includes(f));
  const kept: Manifest[] = await Promise.all(keep.map((f) => o.store.readManifest(f.rel)));
  const referenced = referencedChunks(kept);
  // A chunk stored as a delta needs its keyframe.
  for (const h of [...referenced]) {
    const base = o.store.deltaBase(h);
    if (base !== undefined) referenced.add(base);
  }
  const plan = await planCollection(o.store, referenced, nowMs, grace);
  const garbage = plan.reduce((n, p) => n + p.dead, 0);
  if (pruned.length > 0) {
    const command = { type: "PruneSnapshots" as const, snapshotIds: pruned, chunksDeleted: garbage };
    await o.log.handle(o.vm, command, `prune-${o.vm}-${pruned.join(".").slice(0, 200)}`, {
      now: new Date(nowMs),
      known: { state, seq },
    });
  }
  for (const f of drop) await o.store.deleteManifest(f.rel);
  for (const p of plan) {
    if (p.kind === "temp") o.store.removeTemp(p.name);
    else await o.store.rewrite(p.pack, p.keep);
  }
  const level = pruned.length > 0 || garbage > 0 || drop.length > 0 ? "info" : "debug";
  log[level]({ pruned, manifestsDeleted: drop.length, chunksDeleted: garbage, policy: o.policy }, "retention applied");
  return { pruned, chunksDeleted: garbage };
}

/** A pack rewritten above this share of dead bytes (or when small); below it the dead chunks wait. */
const REWRITE_DEAD_SHARE = 0.25;
const SMALL_PACK_BYTES = 32 << 20;

type Collect =
  | { kind: "pack"; pack: Pack; keep: IndexEntry[]; dead: number }
  | { kind: "temp"; name: string; dead: number };

/**
 * What retention removes: packs older than the grace period whose chunks no kept manifest needs
 * (deleted), or that hold enough such chunks to pay for copying the rest (rewritten); and temp
 * files of packs a killed writer never sealed.
 */
async function planCollection(
  store: ChunkStore,
  referenced: Set<string>,
  nowMs: number,
  grace: number,
): Promise<Collect[]> {
  const out: Collect[] = [];
  await store.reload();
  for (const pack of store.sealedPacks()) {
    if (nowMs - (await pack.mtimeMs()) <= grace) continue;
    const keep = pack.entries.filter((e) => referenced.has(e.hash) && store.isLiveCopy(pack, e));
    const live = new Set(keep);
    const deadBytes = pack.entries.filter((e) => !live.has(e)).reduce((n, e) => n + e.length, 0);
    if (deadBytes === 0) continue;
    if (keep.length > 0 && pack.bytes > SMALL_PACK_BYTES && deadBytes < pack.bytes * REWRITE_DEAD_SHARE) continue;
    out.push({ kind: "pack", pack, keep, dead: pack.entries.length - keep.length });
  }
  for (const t of await store.strayTemps())
    if (nowMs - t.mtimeMs > grace) out.push({ kind: "temp", name: t.name, dead: 0 });
  return out;
}
