import { constants, type FileHandle } from "node:fs/promises";
import { posix } from "node:path";
import {
  PathRefusedError,
  STRONG_HASH_BYTES,
  volumeHash,
  zeroCopy,
  type DirHandle,
  type EntryStat,
} from "#native/index.js";
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
import { keepsRecords, readBackCovers, readBacks, recordedHashes, removeRecordsIn } from "./read-back.js";
import { diskDigests, encodeHash, volumeHashOf } from "./volume-hash.js";
import { KeyedLock } from "#common/keyed-lock.js";
import { DirSyncs } from "./dir-sync.js";
import { rememberFinalized } from "./finalized.js";
import { confine, errnoOf, makeDirConfined, openConfined, openDirConfined } from "./volume-paths.js";

export { confine, resolveRoots } from "./volume-paths.js";

/**
 * Mover side of the control RPCs that touch files. Every path is confined to `roots` (canonical,
 * from resolveRoots), and every file and directory is then opened, renamed and removed beneath
 * the root's held fd (volume-paths.ts), never by its path string. Expected refusals are answers
 * ({ok: false, reason}), not exceptions.
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

/** The directory beneath its held root, or undefined if it (or a parent) does not exist. */
function openDirIfPresent(roots: readonly string[], dir: string): DirHandle | undefined {
  try {
    return openDirConfined(roots, dir);
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return undefined;
    if (errnoOf(err) === "ENOTDIR")
      throw new Refused(refuse("DESTINATION_EXISTS", `${dir} exists and is not a directory`));
    if (err instanceof PathOutsideRootError) throw new Refused(refuse("PATH_OUTSIDE_ROOT", err.message));
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
    const volumes: { path: string; sizeBytes: number; dataMap?: DataMap; mode: number; uid: number; gid: number }[] =
      [];
    for (const p of req.paths) {
      const path = await confineOrRefuse(roots, p, true);
      const fh = await openSource(roots, p, path);
      try {
        const { size, mode, uid, gid } = await fh.stat();
        const dataMap = req.regionBytes === undefined ? undefined : dataMapOf(fh, size, req.regionBytes);
        // The mode and owner travel with the plan: the destination file gets them at finalize.
        const owner = { mode: mode & 0o7777, uid, gid };
        volumes.push({ path, sizeBytes: size, ...(dataMap === undefined ? {} : { dataMap }), ...owner });
      } finally {
        await fh.close();
      }
    }
    return { ok: true as const, volumes };
  }, "SOURCE_READ_FAILED");
}

/** The source file beneath its held root; `asked` is what the request named, for the answer. */
async function openSource(roots: readonly string[], asked: string, path: string): Promise<FileHandle> {
  try {
    return await openConfined(roots, path);
  } catch (err) {
    if (err instanceof PathRefusedError)
      throw new Refused(refuse("SOURCE_NOT_REGULAR_FILE", `${JSON.stringify(asked)} is not a regular file`));
    if (err instanceof PathOutsideRootError) throw new Refused(refuse("PATH_OUTSIDE_ROOT", err.message));
    if (errnoOf(err) === "ENOENT") throw new Refused(refuse("SOURCE_NOT_FOUND", `${JSON.stringify(asked)} is gone`));
    throw err;
  }
}

/** Regions a data map may have; the region size doubles until the volume fits. */
export const MAX_DATA_MAP_REGIONS = 4096;

/**
 * Allocated bytes per region, from the file's data extents. Undefined without the native module
 * (no SEEK_DATA: the planner then batches uniformly) or where the file system cannot tell.
 */
export function dataMapOf(fh: FileHandle, sizeBytes: number, regionBytes: number): DataMap | undefined {
  if (!zeroCopy.available || sizeBytes === 0) return undefined;
  let region = regionBytes;
  while (Math.ceil(sizeBytes / region) > MAX_DATA_MAP_REGIONS) region *= 2;
  const dataBytes = new Array<number>(Math.ceil(sizeBytes / region)).fill(0);
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
  }
  return { regionBytes: region, dataBytes };
}

/**
 * Where the volumes would land: the canonical directory (which may not exist yet; its nearest
 * existing ancestor must be inside a root). Refuses names that already exist there, except, for
 * an incremental migration, a regular file (the base it replaces). Creates nothing.
 */
export async function probeDestination(
  req: ProbeDestination,
  roots: readonly string[],
): Promise<ProbeDestinationReply> {
  return answer(async () => {
    checkNames(req.names);
    const dir = await confineOrRefuse(roots, req.dir, false, "PATH_OUTSIDE_ROOT");
    const held = openDirIfPresent(roots, dir);
    try {
      for (const name of req.names) {
        const st = held?.stat(name);
        if (st === undefined || (req.incremental === true && st.kind === "file")) continue;
        const what =
          req.incremental === true
            ? "exists and is not a regular file"
            : "already exists (dwcp migrate --incremental brings an earlier copy up to date)";
        throw new Refused(refuse("DESTINATION_EXISTS", `${posix.join(dir, name)} ${what}`));
      }
    } finally {
      held?.close();
    }
    return { ok: true as const, dir };
  }, "INTERNAL");
}

/**
 * Turn each `<name>.part` into `<name>`: truncate to size, optionally verify the CRC32C of the
 * whole file, fsync, rename, fsync the directory. Idempotent: a volume whose final file exists
 * and whose .part is gone was finalized before (the reply was lost) and is only re-verified.
 * An incremental migration's `.part` replaces the final file (its base) in the one rename; its
 * final file without a `.part` is finalized only if it is the volume.
 */
export async function finalizeVolumes(
  req: FinalizeVolumes,
  roots: readonly string[],
  log?: Logger,
): Promise<FinalizeReply> {
  return answer(async () => {
    checkNames(req.volumes.map((v) => v.destName));
    const dir = await confineOrRefuse(roots, req.destDir, false, "FINALIZE_FAILED");
    const names = [...new Set(req.volumes.map((v) => v.destName))].sort();
    return inTurn(dir, names, () => finalizeIn(roots, dir, req, log));
  }, "FINALIZE_FAILED");
}

/**
 * One finalize per destination file at a time in this process: a retried request (the first
 * reply was lost in a leader election) or a second coordinator must find the first one's rename
 * done, not race it. Finalizes of other files, in the same directory too, run at once (a
 * thousand small migrations into one directory would otherwise finalize one by one); the
 * rename refuses to replace a file either way. Names are taken in sorted order.
 */
const finalizing = new KeyedLock();
/** The destination directories' fsyncs, shared by finalizes that end at once. */
const dirSyncs = new DirSyncs();

function inTurn<T>(dir: string, names: readonly string[], fn: () => Promise<T>): Promise<T> {
  const [first, ...rest] = names;
  if (first === undefined) return fn();
  return finalizing.run(`${dir}/${first}`, () => inTurn(dir, rest, fn));
}

async function finalizeIn(
  roots: readonly string[],
  dir: string,
  req: FinalizeVolumes,
  log: Logger | undefined,
): Promise<FinalizeReply> {
  // An empty volume may never have had a batch: its directory may not exist yet.
  const held = req.volumes.some((v) => v.sizeBytes === 0)
    ? (await makeDirConfined(roots, dir)).dir
    : openDirIfPresent(roots, dir);
  if (held === undefined) {
    throw new Refused(refuse("FINALIZE_FAILED", `${dir} is missing: no data of this migration reached this host`));
  }
  try {
    const paths: string[] = [];
    const check: Check = {
      verify: req.verify,
      migrationId: req.migrationId,
      chunkSizeBytes: req.chunkSizeBytes,
      incremental: req.incremental === true,
      log,
    };
    for (const volume of req.volumes) {
      if (volume.blake3 === undefined || req.chunkSizeBytes === undefined) {
        log?.warn(
          { volume: volume.destName },
          "the transfer log has no BLAKE3 for this volume (events of an older mover): checking its CRC32C only",
        );
      }
      paths.push(await finalizeOne(held, volume, check));
    }
    await dirSyncs.sync(dir, held);
    return { ok: true as const, paths };
  } finally {
    held.close();
  }
}

type FinalVolume = FinalizeVolumes["volumes"][number];

/** What finalize checks of each volume. */
interface Check {
  verify: boolean;
  migrationId: string;
  /** The plan's chunk size; with a volume's `blake3`, its hash is checked. */
  chunkSizeBytes: number | undefined;
  /** The final file may be the migration's base: the `.part` replaces it. */
  incremental: boolean;
  log: Logger | undefined;
}

/** The volume hash to check and the chunk size it is built on, when the log has one. */
const hashOf = (v: FinalVolume, c: Check): { blake3: string; chunkSizeBytes: number } | undefined =>
  v.blake3 === undefined || c.chunkSizeBytes === undefined
    ? undefined
    : { blake3: v.blake3, chunkSizeBytes: c.chunkSizeBytes };

/** Every step beneath the held directory `dir`: its entries are never reached by path. */
async function finalizeOne(dir: DirHandle, v: FinalVolume, check: Check): Promise<string> {
  const partFile = partName(v.destName);
  const part = posix.join(dir.path, partFile);
  const final = posix.join(dir.path, v.destName);
  const [partStat, finalStat] = [dir.stat(partFile), dir.stat(v.destName)];
  if (partStat === undefined && finalStat !== undefined) {
    if (!check.incremental) await checkFinalized(dir, v, finalStat, check);
    if (!check.incremental || (await isFinalized(dir, v, finalStat, check))) {
      rememberFinalized(part, check.migrationId);
      removeRecordsIn(dir, partFile);
      return final;
    }
    // The base, and no `.part`: only an empty volume (which no batch writes) may have none.
    if (v.sizeBytes > 0) {
      throw new Refused(refuse("FINALIZE_FAILED", `${part} is missing: no data of this volume reached this host`));
    }
  } else if (finalStat !== undefined && !(check.incremental && finalStat.kind === "file")) {
    throw new Refused(refuse("DESTINATION_EXISTS", `${final} already exists; refusing to overwrite it with ${part}`));
  }
  const replace = check.incremental && finalStat !== undefined;
  if (partStat === undefined && v.sizeBytes > 0) {
    throw new Refused(refuse("FINALIZE_FAILED", `${part} is missing: no data of this volume reached this host`));
  }
  const flags = constants.O_RDWR | (partStat === undefined ? constants.O_CREAT : 0);
  const fh = await openFileIn(dir, partFile, flags);
  try {
    const st = await fh.stat();
    if (st.size !== v.sizeBytes) await fh.truncate(v.sizeBytes);
    await verifyPart(fh, part, v, check);
    await applyOwnership(fh, v);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    // renameat2(RENAME_NOREPLACE): a final file that appeared meanwhile is never replaced. An
    // incremental migration's base is replaced atomically: the name is the old or the new file.
    dir.rename(partFile, v.destName, { noReplace: !replace });
  } catch (err) {
    // Another mover process of this host finalized it between our checks and the rename.
    const now = ["ENOENT", "EEXIST"].includes(errnoOf(err) ?? "") ? dir.stat(v.destName) : undefined;
    if (now === undefined) throw err;
    await checkFinalized(dir, v, now, check);
  }
  rememberFinalized(part, check.migrationId);
  removeRecordsIn(dir, partFile);
  return final;
}

/** A file in a held directory; anything but a regular file (a symlink included) is refused. */
async function openFileIn(dir: DirHandle, name: string, flags: number): Promise<FileHandle> {
  try {
    return await dir.openFile(name, { flags, mode: 0o640 });
  } catch (err) {
    if (err instanceof PathRefusedError)
      throw new Refused(refuse("FINALIZE_FAILED", `${posix.join(dir.path, name)} is not a regular file`));
    throw err;
  }
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
  if (!keepsRecords(v.sizeBytes)) {
    // A small volume has no records: read it whole.
    if (hash !== undefined) return verifyDisk(fh, part, v, check, hash);
    return verifyCrc(part, await diskCrc32c(fh, part, 0, v.sizeBytes), v.crc32c);
  }
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

/**
 * Whether an incremental migration's final file, with no `.part` beside it, is already the volume.
 * Its content is checked even without `verify`: a base of the right size is not the volume.
 */
async function isFinalized(dir: DirHandle, v: FinalVolume, st: EntryStat, check: Check): Promise<boolean> {
  try {
    await checkFinalized(dir, v, st, { ...check, verify: true });
    return true;
  } catch (err) {
    if (err instanceof Refused) return false;
    throw err;
  }
}

async function checkFinalized(dir: DirHandle, v: FinalVolume, st: EntryStat, check: Check): Promise<void> {
  const final = posix.join(dir.path, v.destName);
  if (st.kind !== "file" || st.size !== v.sizeBytes) {
    throw new Refused(refuse("DESTINATION_EXISTS", `${final} exists but is not the ${v.sizeBytes}-byte volume`));
  }
  const hash = hashOf(v, check);
  if (!check.verify && hash === undefined) return;
  const fh = await openFileIn(dir, v.destName, constants.O_RDONLY);
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
    const held = openDirIfPresent(roots, dir);
    if (held === undefined) return { ok: true as const };
    try {
      for (const name of req.names) {
        held.unlink(partName(name), { ignoreMissing: true });
        removeRecordsIn(held, partName(name));
      }
    } finally {
      held.close();
    }
    if (!roots.includes(dir)) removeEmptyDir(roots, dir);
    return { ok: true as const };
  }, "INTERNAL");
}

/** rmdir by the held parent; a directory that is not empty (or gone) stays as it is. */
function removeEmptyDir(roots: readonly string[], dir: string): void {
  const parent = openDirIfPresent(roots, posix.dirname(dir));
  try {
    parent?.rmdir(posix.basename(dir), { ignoreMissing: true });
  } catch {
    // ENOTEMPTY: other files live there.
  } finally {
    parent?.close();
  }
}

/** The source's mode on the destination file, and its owner when this process may give it (root). */
async function applyOwnership(fh: FileHandle, v: FinalVolume): Promise<void> {
  // chown first: it clears set-user/group-id bits that chmod then sets.
  if (v.uid !== undefined && v.gid !== undefined && process.getuid?.() === 0) await fh.chown(v.uid, v.gid);
  if (v.mode !== undefined) await fh.chmod(v.mode);
}
