import { constants, type FileHandle, lstat, open, rename, rmdir, stat } from "node:fs/promises";
import type { Stats } from "node:fs";
import { posix } from "node:path";
import { STRONG_HASH_BYTES, volumeHash, zeroCopy } from "#native/index.js";
import type { Logger } from "#common/logger.js";
import type {
  AbortReply,
  DataMap,
  AbortVolumes,
  FailureCode,
  FinalizeReply,
  FinalizeVolumes,
  ProbeDestination,
  ProbeDestinationReply,
  ProbeSource,
  ProbeSourceReply,
  RejectionReason,
} from "#schemas/index.js";
import { basenameProblem, duplicates, partName } from "../domain/paths.js";
import { PathNotFoundError, PathOutsideRootError } from "../errors.js";
import { dataExtents } from "./extents.js";
import { diskCrc32c } from "./volume-crc.js";
import { readBackCovers, readBacks, recordedHashes, removeReadBack } from "./read-back.js";
import { diskDigests, encodeHash, volumeHashOf } from "./volume-hash.js";
import { KeyedLock } from "#common/keyed-lock.js";
import { confine, ensureDirInside, errnoOf, fsyncDir, removeIfPresent } from "./volume-paths.js";

export { confine, resolveRoots } from "./volume-paths.js";

/**
 * Mover side of the control RPCs that touch files. Every path is confined to `roots` (canonical,
 * from resolveRoots). Expected refusals are answers ({ok: false, reason}), not exceptions.
 */

type Refusal = { ok: false; reason: RejectionReason | FailureCode; message: string };
const refuse = (reason: Refusal["reason"], message: string): Refusal => ({ ok: false, reason, message });

/** Thrown inside this module to short-circuit into a refusal. */
class Refused extends Error {
  constructor(readonly refusal: Refusal) {
    super(refusal.message);
  }
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p);
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return undefined;
    throw err;
  }
}

/** Confine or refuse with PATH_OUTSIDE_ROOT (and `notFound` when the path must exist). */
async function confineOrRefuse(
  roots: readonly string[],
  p: string,
  mustExist: boolean,
  notFound: Refusal["reason"] = "SOURCE_NOT_FOUND",
): Promise<string> {
  try {
    return await confine(roots, p, { mustExist });
  } catch (err) {
    if (err instanceof PathOutsideRootError) throw new Refused(refuse("PATH_OUTSIDE_ROOT", err.message));
    if (err instanceof PathNotFoundError || errnoOf(err) === "ENOTDIR")
      throw new Refused(refuse(notFound, messageOf(err)));
    throw err;
  }
}

function checkNames(names: readonly string[]): void {
  for (const name of names) {
    const problem = basenameProblem(name);
    if (problem !== undefined)
      throw new Refused(refuse("PATH_OUTSIDE_ROOT", `name ${JSON.stringify(name)} ${problem}`));
  }
  const dup = duplicates(names);
  if (dup.length > 0)
    throw new Refused(refuse("DUPLICATE_DESTINATION", `names appear more than once: ${dup.join(", ")}`));
}

async function answer<T>(work: () => Promise<T>, failure: Refusal["reason"]): Promise<T | Refusal> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof Refused) return err.refusal;
    const errno = errnoOf(err);
    if (errno === "ENOSPC" || errno === "EDQUOT") return refuse("NO_SPACE", messageOf(err));
    return refuse(failure, messageOf(err));
  }
}

/** Canonical path and size of each source volume; all must be regular files inside a root. */
export async function probeSource(req: ProbeSource, roots: readonly string[]): Promise<ProbeSourceReply> {
  return answer(async () => {
    const volumes: { path: string; sizeBytes: number; dataMap?: DataMap }[] = [];
    for (const p of req.paths) {
      const path = await confineOrRefuse(roots, p, true);
      const st = await stat(path);
      if (!st.isFile())
        throw new Refused(refuse("SOURCE_NOT_REGULAR_FILE", `${JSON.stringify(p)} is not a regular file`));
      const dataMap = req.regionBytes === undefined ? undefined : await dataMapOf(path, st.size, req.regionBytes);
      volumes.push(dataMap === undefined ? { path, sizeBytes: st.size } : { path, sizeBytes: st.size, dataMap });
    }
    return { ok: true as const, volumes };
  }, "SOURCE_READ_FAILED");
}

/** Regions a data map may have; the region size doubles until the volume fits. */
export const MAX_DATA_MAP_REGIONS = 4096;

/**
 * Allocated bytes per region, from the file's data extents. Undefined without the native module
 * (no SEEK_DATA: the planner then batches uniformly) or where the file system cannot tell.
 */
export async function dataMapOf(path: string, sizeBytes: number, regionBytes: number): Promise<DataMap | undefined> {
  if (!zeroCopy.available || sizeBytes === 0) return undefined;
  let region = regionBytes;
  while (Math.ceil(sizeBytes / region) > MAX_DATA_MAP_REGIONS) region *= 2;
  const dataBytes = new Array<number>(Math.ceil(sizeBytes / region)).fill(0);
  const fh = await open(path, "r");
  try {
    for (const { start, end } of dataExtents(fh.fd, sizeBytes)) {
      for (let pos = start; pos < end; ) {
        const r = Math.floor(pos / region);
        const upto = Math.min(end, (r + 1) * region);
        dataBytes[r] = (dataBytes[r] ?? 0) + (upto - pos);
        pos = upto;
      }
    }
  } catch {
    return undefined; // SEEK_DATA unsupported here: plan as if dense
  } finally {
    await fh.close();
  }
  return { regionBytes: region, dataBytes };
}

/**
 * Where the volumes would land: the canonical directory (which may not exist yet; its nearest
 * existing ancestor must be inside a root). Refuses names that already exist there. Creates nothing.
 */
export async function probeDestination(
  req: ProbeDestination,
  roots: readonly string[],
): Promise<ProbeDestinationReply> {
  return answer(async () => {
    checkNames(req.names);
    const dir = await confineOrRefuse(roots, req.dir, false, "PATH_OUTSIDE_ROOT");
    const dirStat = await lstatOrUndefined(dir);
    if (dirStat !== undefined && !dirStat.isDirectory()) {
      throw new Refused(refuse("DESTINATION_EXISTS", `${dir} exists and is not a directory`));
    }
    for (const name of req.names) {
      if ((await lstatOrUndefined(posix.join(dir, name))) !== undefined) {
        throw new Refused(refuse("DESTINATION_EXISTS", `${posix.join(dir, name)} already exists`));
      }
    }
    return { ok: true as const, dir };
  }, "INTERNAL");
}

/**
 * Turn each `<name>.part` into `<name>`: truncate to size, check the volume's BLAKE3 against the
 * log's and optionally the CRC32C of the whole file, fsync, rename, fsync the directory.
 * Idempotent: a volume whose final file exists and whose .part is gone was finalized before (the
 * reply was lost) and is only re-verified. A volume whose hash differs from the log's is refused
 * with VOLUME_HASH_MISMATCH and its .part left in place (the coordinator's abort removes it).
 */
export async function finalizeVolumes(
  req: FinalizeVolumes,
  roots: readonly string[],
  log?: Logger,
): Promise<FinalizeReply> {
  return answer(async () => {
    checkNames(req.volumes.map((v) => v.destName));
    const dir = await confineOrRefuse(roots, req.destDir, false, "FINALIZE_FAILED");
    return finalizing.run(dir, () => finalizeIn(roots, dir, req, log));
  }, "FINALIZE_FAILED");
}

/**
 * One finalize per directory at a time in this process: a retried request (the first reply was
 * lost in a leader election) or a second coordinator must find the first one's rename done,
 * not race it.
 */
const finalizing = new KeyedLock();

async function finalizeIn(
  roots: readonly string[],
  dir: string,
  req: FinalizeVolumes,
  log: Logger | undefined,
): Promise<FinalizeReply> {
  const dirsToSync = new Set<string>([dir]);
  if (req.volumes.some((v) => v.sizeBytes === 0)) {
    for (const created of await ensureDirInside(roots, dir)) dirsToSync.add(posix.dirname(created));
  }
  const paths: string[] = [];
  const check: Check = { verify: req.verify, migrationId: req.migrationId, chunkSizeBytes: req.chunkSizeBytes, log };
  for (const volume of req.volumes) {
    if (volume.blake3 === undefined || req.chunkSizeBytes === undefined) {
      log?.warn(
        { volume: volume.destName },
        "the transfer log has no BLAKE3 for this volume (events of an older mover): checking its CRC32C only",
      );
    }
    paths.push(await finalizeOne(dir, volume, check));
  }
  for (const d of dirsToSync) await fsyncDir(d);
  return { ok: true as const, paths };
}

type FinalVolume = FinalizeVolumes["volumes"][number];

/** What finalize checks of each volume. */
interface Check {
  verify: boolean;
  migrationId: string;
  /** The plan's chunk size; with a volume's `blake3`, its hash is checked. */
  chunkSizeBytes: number | undefined;
  log: Logger | undefined;
}

/** The volume hash to check and the chunk size it is built on, when the log has one. */
const hashOf = (v: FinalVolume, c: Check): { blake3: string; chunkSizeBytes: number } | undefined =>
  v.blake3 === undefined || c.chunkSizeBytes === undefined
    ? undefined
    : { blake3: v.blake3, chunkSizeBytes: c.chunkSizeBytes };

async function finalizeOne(dir: string, v: FinalVolume, check: Check): Promise<string> {
  const part = posix.join(dir, partName(v.destName));
  const final = posix.join(dir, v.destName);
  const [partStat, finalStat] = [await lstatOrUndefined(part), await lstatOrUndefined(final)];
  if (partStat === undefined && finalStat !== undefined) {
    await checkFinalized(final, finalStat, v, check);
    await removeReadBack(part);
    return final;
  }
  if (finalStat !== undefined) {
    throw new Refused(refuse("DESTINATION_EXISTS", `${final} already exists; refusing to overwrite it with ${part}`));
  }
  if (partStat === undefined && v.sizeBytes > 0) {
    throw new Refused(refuse("FINALIZE_FAILED", `${part} is missing: no data of this volume reached this host`));
  }
  const flags = constants.O_RDWR | constants.O_NOFOLLOW | (partStat === undefined ? constants.O_CREAT : 0);
  const fh = await open(part, flags, 0o640);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Refused(refuse("FINALIZE_FAILED", `${part} is not a regular file`));
    if (st.size !== v.sizeBytes) await fh.truncate(v.sizeBytes);
    await verifyPart(fh, part, v, check);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(part, final);
  } catch (err) {
    // Another mover process of this host finalized it between our checks and the rename.
    const now = errnoOf(err) === "ENOENT" ? await lstatOrUndefined(final) : undefined;
    if (now === undefined) throw err;
    await checkFinalized(final, now, v, check);
  }
  await removeReadBack(part);
  return final;
}

/**
 * The checks before the rename. Batches are read back as they land (read-back.ts), and each
 * left the hashes of the chunks this host accepted: when the read-back records cover the volume
 * and agree with the log's CRC32C (with `verify`) and the hash records cover it and build the
 * log's volume hash, the file is not read a second time. Otherwise, or if the recorded hashes
 * disagree with the log (a batch may have been written again since), the volume is read from
 * the disk, which decides.
 */
async function verifyPart(fh: FileHandle, part: string, v: FinalVolume, check: Check): Promise<void> {
  const hash = hashOf(v, check);
  if (!check.verify && hash === undefined) return;
  await readBacks.settled(part);
  const crcOk = !check.verify || (await readBackCovers(part, check.migrationId, v.sizeBytes, v.crc32c));
  if (hash === undefined) {
    if (!crcOk) verifyCrc(part, await diskCrc32c(fh, part, 0, v.sizeBytes), v.crc32c);
    return;
  }
  const hashes = crcOk ? await recordedHashes(part, check.migrationId, v.sizeBytes) : undefined;
  const chunks = Math.ceil(v.sizeBytes / hash.chunkSizeBytes);
  if (hashes?.length === chunks * STRONG_HASH_BYTES && encodeHash(volumeHash(hashes)) === hash.blake3) return;
  check.log?.info(
    { volume: v.destName, crcCovered: crcOk, hashesCovered: hashes !== undefined },
    "the batch records do not prove this volume's hash; reading it whole",
  );
  await verifyDisk(fh, part, v, check, hash);
}

/** Reads the whole volume once for its CRC32C (with `verify`) and its BLAKE3, and checks them. */
async function verifyDisk(
  fh: FileHandle,
  path: string,
  v: FinalVolume,
  check: Check,
  hash: { blake3: string; chunkSizeBytes: number },
): Promise<void> {
  const disk = await diskDigests(fh, path, v.sizeBytes, hash.chunkSizeBytes);
  if (check.verify) verifyCrc(path, disk.crc32c, v.crc32c);
  const actual = volumeHashOf(disk.chunkHashes);
  if (actual !== hash.blake3) {
    throw new Refused(
      refuse(
        "VOLUME_HASH_MISMATCH",
        `volume ${v.destName} has BLAKE3 ${actual} at the destination, the transfer log says ${hash.blake3}: ` +
          "its bytes changed on the way; the migration must be run again",
      ),
    );
  }
}

async function checkFinalized(final: string, st: Stats, v: FinalVolume, check: Check): Promise<void> {
  if (!st.isFile() || st.size !== v.sizeBytes) {
    throw new Refused(refuse("DESTINATION_EXISTS", `${final} exists but is not the ${v.sizeBytes}-byte volume`));
  }
  const hash = hashOf(v, check);
  if (!check.verify && hash === undefined) return;
  const fh = await open(final, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    if (hash !== undefined) await verifyDisk(fh, final, v, check, hash);
    else verifyCrc(final, await diskCrc32c(fh, final, 0, v.sizeBytes), v.crc32c);
  } finally {
    await fh.close();
  }
}

function verifyCrc(path: string, actual: number, expected: number): void {
  if (actual === expected >>> 0) return;
  const hex = (n: number): string => n.toString(16).padStart(8, "0");
  throw new Refused(
    refuse("VERIFY_FAILED", `${path} has CRC32C ${hex(actual)}, the transfer log says ${hex(expected)}`),
  );
}

/** Remove the `.part` files of an abandoned migration and its directory if that is now empty. */
export async function abortVolumes(req: AbortVolumes, roots: readonly string[]): Promise<AbortReply> {
  return answer(async () => {
    checkNames(req.names);
    let dir: string;
    try {
      dir = await confineOrRefuse(roots, req.destDir, true);
    } catch (err) {
      if (err instanceof Refused && err.refusal.reason === "SOURCE_NOT_FOUND") return { ok: true as const };
      throw err;
    }
    for (const name of req.names) {
      const part = posix.join(dir, partName(name));
      await removeIfPresent(part);
      await removeReadBack(part);
    }
    if (!roots.includes(dir)) await rmdir(dir).catch(() => undefined);
    return { ok: true as const };
  }, "INTERNAL");
}
