import { MAX_CHUNK_BYTES } from "#schemas/common.js";
import type { Manifest, ManifestVolume, VolumeChanges } from "#schemas/replication.js";

/** 4 KiB: the unit of change detection. */
export const PAGE = 4096;
/**
 * Default bytes per stored chunk. A changed chunk is hashed whole at the source and rebuilt and
 * hashed whole at the destination, so smaller chunks re-hash less per scattered change: with 1% of
 * 4 KiB pages changed at random, 15% of 64 KiB chunks change (64% of 256 KiB ones, 92% of 1 MiB
 * ones). Packs keep the number of files independent of it (bench/incremental.ts).
 */
export const DEFAULT_CHUNK_BYTES = 64 * 1024;

export type { Manifest, ManifestVolume, VolumeChanges } from "#schemas/replication.js";

export const chunkCount = (sizeBytes: number, chunkBytes: number): number => Math.ceil(sizeBytes / chunkBytes);
export const chunkLength = (sizeBytes: number, chunkBytes: number, index: number): number =>
  Math.max(0, Math.min(chunkBytes, sizeBytes - index * chunkBytes));

/** Every chunk hash the manifests reference. */
export function referencedChunks(manifests: Iterable<Manifest>): Set<string> {
  const out = new Set<string>();
  for (const m of manifests) for (const v of m.volumes) for (const h of v.chunks) if (h !== null) out.add(h);
  return out;
}

/** How many snapshots retention keeps: the newest N, those younger than a duration, or both. */
export interface RetentionPolicy {
  keep?: number;
  keepForMs?: number;
}

/**
 * Ids to prune, oldest first. The newest snapshot is always kept, so a policy can never leave a
 * VM without a restore point.
 */
export function selectPrunable(
  snapshots: Array<{ snapshotId: string; takenAt: string }>,
  policy: RetentionPolicy,
  nowMs: number,
): string[] {
  if (policy.keep === undefined && policy.keepForMs === undefined) return [];
  const sorted = [...snapshots].sort((a, b) => Date.parse(a.takenAt) - Date.parse(b.takenAt));
  const newestFirst = [...sorted].reverse();
  const keep = new Set<string>();
  newestFirst.forEach((s, i) => {
    const byCount = policy.keep !== undefined && i < Math.max(1, policy.keep);
    const byAge = policy.keepForMs !== undefined && nowMs - Date.parse(s.takenAt) <= policy.keepForMs;
    if (i === 0 || byCount || byAge) keep.add(s.snapshotId);
  });
  return sorted.filter((s) => !keep.has(s.snapshotId)).map((s) => s.snapshotId);
}

/**
 * Pages of one chunk that differ from the previous version: a fingerprint that changed, a page the
 * previous version did not have, or the pages from the shorter version's last page on when the
 * volume's size changed (a partial page's fingerprint does not see the bytes that follow it).
 */
export function changedPages(
  fresh: BigUint64Array,
  previous: BigUint64Array | undefined,
  firstPage: number,
  sizeChanged: boolean,
  totalPages: number,
): number[] {
  const out: number[] = [];
  const oldPages = previous?.length ?? 0;
  const edge = sizeChanged ? Math.min(oldPages, totalPages) - 1 : Infinity;
  for (let j = 0; j < fresh.length; j++) {
    const p = firstPage + j;
    if (p >= oldPages || p >= edge || previous?.[p] !== fresh[j]) out.push(j);
  }
  return out;
}

/** Snapshot ids sort by time: 20261126T211500123Z-3f9a. */
export const snapshotIdFor = (takenAt: Date, suffix: string): string =>
  `${takenAt.toISOString().replace(/[-:.]/g, "")}-${suffix}`;

/** A volume name is a plain file name: restore writes it under the target directory. */
export const isPlainName = (name: string): boolean =>
  name.length > 0 && name.length <= 255 && !/[/\\\0]/.test(name) && name !== "." && name !== "..";

/** What is wrong with a manifest a source sent, or undefined. */
export function manifestProblem(m: Manifest): string | undefined {
  if (
    !Number.isInteger(m.chunkSizeBytes) ||
    m.chunkSizeBytes < PAGE ||
    m.chunkSizeBytes % PAGE !== 0 ||
    m.chunkSizeBytes > MAX_CHUNK_BYTES
  )
    return "chunk size must be a multiple of 4 KiB up to 64 MiB";
  for (const v of m.volumes) {
    if (!isPlainName(v.name)) return `volume name ${JSON.stringify(v.name).slice(0, 80)} is not a plain file name`;
    if (v.chunks.length !== chunkCount(v.sizeBytes, m.chunkSizeBytes))
      return `volume ${v.name} lists ${v.chunks.length} chunks for ${v.sizeBytes} bytes`;
  }
  if (new Set(m.volumes.map((v) => v.name)).size !== m.volumes.length) return "volume names repeat";
  return undefined;
}

/**
 * The volumes of a new manifest as changes to its parent's: undefined when a volume is not in the
 * parent (the whole manifest is sent then). A parent's volume is cut or extended with nulls to the
 * new chunk count before it is compared, as `applyChanges` does.
 */
export function volumeChanges(
  parent: readonly ManifestVolume[],
  volumes: readonly ManifestVolume[],
): VolumeChanges[] | undefined {
  const byName = new Map(parent.map((v) => [v.name, v.chunks]));
  const out: VolumeChanges[] = [];
  for (const v of volumes) {
    const old = byName.get(v.name);
    if (old === undefined) return undefined;
    const changes: VolumeChanges["changes"] = [];
    for (let i = 0; i < v.chunks.length; i++)
      if (v.chunks[i] !== (old[i] ?? null)) changes.push({ index: i, hash: v.chunks[i] ?? null });
    out.push({ name: v.name, sizeBytes: v.sizeBytes, ...ownershipOf(v), changes });
  }
  return out;
}

/** The volumes `volumeChanges` described, rebuilt from the parent's; a string says what is wrong. */
export function applyChanges(
  parent: readonly ManifestVolume[],
  chunkBytes: number,
  volumes: readonly VolumeChanges[],
): ManifestVolume[] | string {
  const byName = new Map(parent.map((v) => [v.name, v.chunks]));
  const out: ManifestVolume[] = [];
  for (const v of volumes) {
    const old = byName.get(v.name);
    if (old === undefined) return `volume ${JSON.stringify(v.name).slice(0, 80)} is not in the parent`;
    const n = chunkCount(v.sizeBytes, chunkBytes);
    const chunks = old.length >= n ? old.slice(0, n) : [...old, ...new Array<null>(n - old.length).fill(null)];
    for (const { index, hash } of v.changes) {
      if (index >= n) return `volume ${v.name} changes chunk ${index} of ${n}`;
      chunks[index] = hash;
    }
    out.push({ name: v.name, sizeBytes: v.sizeBytes, ...ownershipOf(v), chunks });
  }
  return out;
}

/** A volume's mode and owner fields, those it has. */
export function ownershipOf(v: { mode?: number; uid?: number; gid?: number }): {
  mode?: number;
  uid?: number;
  gid?: number;
} {
  return {
    ...(v.mode === undefined ? {} : { mode: v.mode }),
    ...(v.uid === undefined ? {} : { uid: v.uid }),
    ...(v.gid === undefined ? {} : { gid: v.gid }),
  };
}
