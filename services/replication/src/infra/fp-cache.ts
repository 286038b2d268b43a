import { mkdir, readFile, readdir, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { strongHashSync } from "#native/index.js";
import type { ManifestVolume } from "../domain/store/manifest.js";

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

/**
 * A cache file: the BLAKE3 of the body in hex, a newline, the body. The files are renamed into
 * place without an fsync (a cache is cheap to lose, and it is written on every sync): after a crash
 * one may be empty or torn, which the digest catches, and the sync then asks the destination
 * instead. A wrong fingerprint must never be trusted: it would hide a change.
 */
async function writeChecked(path: string, body: Buffer): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, Buffer.concat([Buffer.from(`${strongHashSync(body).toString("hex")}\n`), body]));
  await rename(tmp, path);
}

async function readChecked(path: string): Promise<Buffer | undefined> {
  const raw = await readFile(path);
  const body = raw.subarray(65);
  return raw.length >= 65 &&
    raw[64] === 10 &&
    raw.subarray(0, 64).toString("latin1") === strongHashSync(body).toString("hex")
    ? body
    : undefined;
}

export async function loadCache(
  stateDir: string,
  vm: string,
  snapshotId: string | undefined,
): Promise<SourceCache | undefined> {
  if (snapshotId === undefined) return undefined;
  try {
    const metaBytes = await readChecked(join(dirOf(stateDir, vm), `${snapshotId}.json`));
    if (!metaBytes) return undefined;
    const meta = JSON.parse(metaBytes.toString("utf8")) as Omit<SourceCache, "volumes"> & { volumes: ManifestVolume[] };
    const volumes = await Promise.all(
      meta.volumes.map(async (v, i) => {
        const raw = await readChecked(join(dirOf(stateDir, vm), `${snapshotId}.${i}.fp`));
        if (!raw || raw.length % 8 !== 0) throw new RangeError("damaged fingerprint cache");
        const fps = new BigUint64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
        return { ...v, fingerprints: fps };
      }),
    );
    return meta.snapshotId === snapshotId ? { ...meta, volumes } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes the cache of a snapshot (files in parallel, each checked by its digest when loaded). It
 * is only ever loaded for the snapshot the log names as the latest, so it may be written while
 * that snapshot is committed.
 */
export async function writeCache(stateDir: string, vm: string, cache: SourceCache): Promise<void> {
  const dir = dirOf(stateDir, vm);
  await mkdir(dir, { recursive: true });
  const meta = { ...cache, volumes: cache.volumes.map(({ fingerprints: _f, ...v }) => v) };
  await Promise.all([
    ...cache.volumes.map((v, i) =>
      writeChecked(
        join(dir, `${cache.snapshotId}.${i}.fp`),
        Buffer.from(v.fingerprints.buffer, v.fingerprints.byteOffset, v.fingerprints.byteLength),
      ),
    ),
    writeChecked(join(dir, `${cache.snapshotId}.json`), Buffer.from(JSON.stringify(meta))),
  ]);
}

/** Deletes every cache but the one of `keep` (the latest committed snapshot). */
export async function pruneCaches(stateDir: string, vm: string, keep: string): Promise<void> {
  const dir = dirOf(stateDir, vm);
  for (const f of await readdir(dir).catch(() => [] as string[]))
    if (!f.startsWith(`${keep}.`)) await unlink(join(dir, f)).catch(() => undefined);
}

export async function dropCache(stateDir: string, vm: string): Promise<void> {
  const dir = dirOf(stateDir, vm);
  for (const f of await readdir(dir).catch(() => [] as string[])) await unlink(join(dir, f)).catch(() => undefined);
}
