import { constants, mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { openRootDir, strongHashSync, type DirHandle } from "#native/index.js";
import type { ManifestVolume } from "../domain/store/manifest.js";
import { listDir } from "./held-dir.js";

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

/**
 * Where a source keeps its caches: a directory path (trusted as given, made if missing) or a held
 * directory (the replication service's, beneath its host root). Each VM's files are in <vm>/,
 * created, read, renamed and removed beneath the held fd with no symlink followed.
 */
export type StateDir = string | DirHandle;

/** The state directory held (the caller closes it). */
async function holdState(stateDir: StateDir, create: boolean): Promise<DirHandle | undefined> {
  if (typeof stateDir !== "string") return stateDir.openDir("");
  if (create) await mkdir(stateDir, { recursive: true });
  try {
    return openRootDir(resolve(stateDir));
  } catch (err) {
    if (!create && (err as { sysCode?: unknown }).sysCode === "ENOENT") return undefined;
    throw err;
  }
}

/** Runs `fn` with the VM's cache directory held (made when `create`); undefined if there is none. */
async function inVmDir<T>(
  stateDir: StateDir,
  vm: string,
  create: boolean,
  fn: (dir: DirHandle) => Promise<T>,
): Promise<T | undefined> {
  const state = await holdState(stateDir, create);
  if (state === undefined) return undefined;
  try {
    let dir: DirHandle;
    if (create) dir = (await state.makeDirs(vm)).dir;
    else {
      try {
        dir = state.openDir(vm);
      } catch (err) {
        if ((err as { sysCode?: unknown }).sysCode === "ENOENT") return undefined;
        throw err;
      }
    }
    try {
      return await fn(dir);
    } finally {
      dir.close();
    }
  } finally {
    state.close();
  }
}

/**
 * A cache file: the BLAKE3 of the body in hex, a newline, the body. The files are renamed into
 * place without an fsync (a cache is cheap to lose, and it is written on every sync): after a crash
 * one may be empty or torn, which the digest catches, and the sync then asks the destination
 * instead. A wrong fingerprint must never be trusted: it would hide a change.
 */
async function writeChecked(dir: DirHandle, name: string, body: Buffer): Promise<void> {
  const tmp = `${name}.tmp-${process.pid}`;
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
  const fh = await dir.openFile(tmp, { flags, mode: 0o644 });
  try {
    await fh.writeFile(Buffer.concat([Buffer.from(`${strongHashSync(body).toString("hex")}\n`), body]));
  } finally {
    await fh.close();
  }
  dir.rename(tmp, name);
}

async function readChecked(dir: DirHandle, name: string): Promise<Buffer | undefined> {
  const fh = await dir.openFile(name);
  let raw: Buffer;
  try {
    raw = await fh.readFile();
  } finally {
    await fh.close();
  }
  const body = raw.subarray(65);
  return raw.length >= 65 &&
    raw[64] === 10 &&
    raw.subarray(0, 64).toString("latin1") === strongHashSync(body).toString("hex")
    ? body
    : undefined;
}

export async function loadCache(
  stateDir: StateDir,
  vm: string,
  snapshotId: string | undefined,
): Promise<SourceCache | undefined> {
  if (snapshotId === undefined) return undefined;
  try {
    return await inVmDir(stateDir, vm, false, (dir) => loadFrom(dir, snapshotId));
  } catch {
    return undefined;
  }
}

async function loadFrom(dir: DirHandle, snapshotId: string): Promise<SourceCache | undefined> {
  const metaBytes = await readChecked(dir, `${snapshotId}.json`);
  if (!metaBytes) return undefined;
  const meta = JSON.parse(metaBytes.toString("utf8")) as Omit<SourceCache, "volumes"> & { volumes: ManifestVolume[] };
  const volumes = await Promise.all(
    meta.volumes.map(async (v, i) => {
      const raw = await readChecked(dir, `${snapshotId}.${i}.fp`);
      if (!raw || raw.length % 8 !== 0) throw new RangeError("damaged fingerprint cache");
      const fps = new BigUint64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
      return { ...v, fingerprints: fps };
    }),
  );
  return meta.snapshotId === snapshotId ? { ...meta, volumes } : undefined;
}

/**
 * Writes the cache of a snapshot (files in parallel, each checked by its digest when loaded). It
 * is only ever loaded for the snapshot the log names as the latest, so it may be written while
 * that snapshot is committed.
 */
export async function writeCache(stateDir: StateDir, vm: string, cache: SourceCache): Promise<void> {
  const meta = { ...cache, volumes: cache.volumes.map(({ fingerprints: _f, ...v }) => v) };
  await inVmDir(stateDir, vm, true, async (dir) => {
    await Promise.all([
      ...cache.volumes.map((v, i) =>
        writeChecked(
          dir,
          `${cache.snapshotId}.${i}.fp`,
          Buffer.from(v.fingerprints.buffer, v.fingerprints.byteOffset, v.fingerprints.byteLength),
        ),
      ),
      writeChecked(dir, `${cache.snapshotId}.json`, Buffer.from(JSON.stringify(meta))),
    ]);
  });
}

/** Deletes every cache but the one of `keep` (the latest committed snapshot). */
export async function pruneCaches(stateDir: StateDir, vm: string, keep: string): Promise<void> {
  await removeCaches(stateDir, vm, (f) => !f.startsWith(`${keep}.`));
}

export async function dropCache(stateDir: StateDir, vm: string): Promise<void> {
  await removeCaches(stateDir, vm, () => true);
}

async function removeCaches(stateDir: StateDir, vm: string, which: (name: string) => boolean): Promise<void> {
  await inVmDir(stateDir, vm, false, async (dir) => {
    for (const f of await listDir(dir)) {
      if (!which(f)) continue;
      try {
        dir.unlink(f, { ignoreMissing: true });
      } catch {
        // a directory or already gone: not a cache file
      }
    }
  });
}
