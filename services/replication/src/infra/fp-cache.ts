import { mkdir, readFile, readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { ManifestVolume } from "../domain/store/manifest.js";
import { writeFileAtomic } from "./durable-file.js";

/**
 * What the source remembers of the last committed snapshot: per volume its chunk hashes and one
 * fingerprint per 4 KiB page. With it a sync reads and fingerprints the source but hashes and
 * sends only changed chunks. Without it (first sync, lost cache) the sync asks the destination
 * which chunks it has.
 */
export interface SourceCache {
  snapshotId: string;
  chunkSizeBytes: number;
  volumes: Array<ManifestVolume & { fingerprints: BigUint64Array }>;
}

const dirOf = (stateDir: string, vm: string): string => join(stateDir, vm);

export async function loadCache(stateDir: string, vm: string, snapshotId: string | undefined): Promise<SourceCache | undefined> {
  if (snapshotId === undefined) return undefined;
  try {
    const meta = JSON.parse(await readFile(join(dirOf(stateDir, vm), `${snapshotId}.json`), "utf8")) as Omit<SourceCache, "volumes"> & { volumes: ManifestVolume[] };
    const volumes = await Promise.all(
      meta.volumes.map(async (v, i) => {
        const raw = await readFile(join(dirOf(stateDir, vm), `${snapshotId}.${i}.fp`));
        const fps = new BigUint64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
        return { ...v, fingerprints: fps };
      }),
    );
    return { ...meta, volumes };
  } catch {
    return undefined;
  }
}

/** Saves the cache of a committed snapshot and drops older ones. */
export async function saveCache(stateDir: string, vm: string, cache: SourceCache): Promise<void> {
  const dir = dirOf(stateDir, vm);
  await mkdir(dir, { recursive: true });
  for (const [i, v] of cache.volumes.entries()) {
    await writeFileAtomic(join(dir, `${cache.snapshotId}.${i}.fp`), Buffer.from(v.fingerprints.buffer, v.fingerprints.byteOffset, v.fingerprints.byteLength));
  }
  const meta = { ...cache, volumes: cache.volumes.map(({ fingerprints: _f, ...v }) => v) };
  await writeFileAtomic(join(dir, `${cache.snapshotId}.json`), JSON.stringify(meta));
  for (const f of await readdir(dir)) if (!f.startsWith(`${cache.snapshotId}.`)) await unlink(join(dir, f)).catch(() => undefined);
}

export async function dropCache(stateDir: string, vm: string): Promise<void> {
  const dir = dirOf(stateDir, vm);
  for (const f of await readdir(dir).catch(() => [] as string[])) await unlink(join(dir, f)).catch(() => undefined);
}
