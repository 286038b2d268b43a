import { constants } from "node:fs/promises";
import { metrics } from "#common/metrics/registry.js";
import { z } from "zod";
import type { Logger } from "#common/logger.js";
import { crc32cCombine, type DirHandle } from "#native/index.js";
import { diskCrc32c } from "./volume-crc.js";
import { heldRoots, openConfined, statConfined } from "./volume-paths.js";

/**
 * Read-back of each batch, overlapped with the transfer. With `verify` on (the default) a volume
 * is checked at finalize against the CRC32C of the transfer log, which used to mean reading the
 * whole volume back after the last batch. Instead, once a batch is fsynced and acknowledged, its
 * destination process reads the batch's range back from the disk in the background (one range
 * at a time per process, while the next batches arrive) and, if it matches the CRC32C of the
 * chunks it accepted, appends a record: the range and that CRC. A mismatch is logged and leaves
 * no record. The reads use O_DIRECT where the file system has it (diskCrc32c): from the
 * disk, not from pages a buffered write left in the cache, and without filling the cache with a
 * volume nobody reads again (buffered read-backs made 2 GiB migrations 0.5-2.4 s slower here).
 *
 * At finalize, after waiting for this process's read-backs of the file, records that cover the
 * volume exactly and combine to the log's CRC32C stand for the whole-volume read. Anything else
 * (no file, a torn line after a crash, a gap, an overlap, another migration's records, a range
 * that read back wrong, a different CRC, a batch received by another mover process of the host
 * whose read-back has not finished) falls back to reading the whole volume: a missing or stale
 * record costs time, never correctness. Records are not fsynced for the same reason; each is
 * written after its batch's data was.
 *
 * Before a batch writes anything, its range is marked as written-but-not-read-back (a record
 * without a CRC). The newest record of a range decides, in the order of the appends (O_APPEND
 * orders them across processes too): a batch sent again, by this process or another, leaves its
 * range unproven until its own read-back matches, and one that reads back wrong leaves it so.
 *
 * Beside them, in `<part>.blake3`, each batch leaves the BLAKE3 of its chunks as this process
 * computed them when it accepted each chunk (volume-hash.ts), appended after the batch's fsync
 * and before its BATCH_OK, whether or not it is read back: finalize builds the volume hash from
 * them and compares it with the log's. The newest hash record of a range wins, as above; where
 * the read-back records make finalize read the volume, it hashes the disk instead.
 *
 * What records cannot see: a write to a range by something other than a batch that marked it.
 * A stale sender of a batch that another mover process of the host now receives was fenced only
 * in its own process: it may still write after the newer holder's read-back, the same bytes
 * unless the source changed under the migration.
 *
 * `part` is a canonical path under a root this process holds (volume-paths.ts): the record files
 * and the `.part` are opened beneath the held root, never through the path string.
 */
export const readBackName = (part: string): string => `${part}.verified`;

/**
 * Volumes of at most this size keep no records: finalize reads them whole, which costs one read
 * of at most 1 MiB, less than the records' appends, reads and removals (a thousand 64 KiB
 * migrations spent 15% of their destination's CPU on them). Every batch of a volume decides
 * the same way, from the volume's size.
 */
export const READ_WHOLE_MAX_BYTES = 1024 * 1024;
export const keepsRecords = (volumeSizeBytes: number): boolean => volumeSizeBytes > READ_WHOLE_MAX_BYTES;

const Record = z.object({
  migrationId: z.string(),
  start: z.number().int().nonnegative(),
  end: z.number().int().nonnegative(),
  /** Absent: the range is being written and has not read back right (yet). */
  crc32c: z.number().int().min(0).max(0xffffffff).optional(),
});
export type ReadBackRecord = z.infer<typeof Record>;

export const hashesName = (part: string): string => `${part}.blake3`;

const HashRecord = z.object({
  migrationId: z.string(),
  start: z.number().int().nonnegative(),
  end: z.number().int().nonnegative(),
  /** BLAKE3 of each chunk of [start, end) in offset order, concatenated, unpadded base64url. */
  blake3: z.string().regex(/^[A-Za-z0-9_-]*$/),
});
export type HashRecord = z.infer<typeof HashRecord>;

/** Appends one record (O_APPEND: one short write, whole even with several writer processes). */
export async function recordReadBack(part: string, r: ReadBackRecord): Promise<void> {
  await appendLine(readBackName(part), r);
}

/**
 * Appends a batch's chunk hashes (before its BATCH_OK). A failure is logged, not thrown:
 * finalize then hashes the volume from the disk.
 */
export async function recordHashes(part: string, r: HashRecord, log: Logger): Promise<void> {
  try {
    await appendLine(hashesName(part), r);
  } catch (err) {
    log.warn({ err, start: r.start, end: r.end }, "chunk hashes not recorded; finalize will hash the volume's disk");
  }
}

/**
 * The chunk hashes this host's batches recorded for [0, size) of `migrationId`'s `part`,
 * concatenated in offset order: the newest record of each range, if they cover the volume with
 * no gap or overlap; undefined otherwise (or without a file).
 */
export async function recordedHashes(part: string, migrationId: string, size: number): Promise<Buffer | undefined> {
  const text = await readText(hashesName(part));
  if (text === undefined) return undefined;
  const newest = new Map<string, HashRecord>();
  for (const line of text.split("\n")) {
    const r = parseLine(line, HashRecord);
    if (r?.migrationId === migrationId && r.end > r.start) newest.set(`${r.start}:${r.end}`, r);
  }
  let at = 0;
  const hashes: Buffer[] = [];
  for (const r of [...newest.values()].sort((a, b) => a.start - b.start)) {
    if (r.start !== at) return undefined;
    hashes.push(Buffer.from(r.blake3, "base64url"));
    at = r.end;
  }
  return at === size ? Buffer.concat(hashes) : undefined;
}

async function appendLine(file: string, r: object): Promise<void> {
  const fh = await openConfined(heldRoots(), file, {
    flags: constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT,
    mode: 0o640,
  });
  try {
    await fh.write(`${JSON.stringify(r)}\n`);
  } finally {
    await fh.close();
  }
}

/**
 * Whether the records of `migrationId` cover [0, size) with no gap or overlap and combine to
 * `expected`. The newest record of a range wins (a batch sent again reads back again).
 */
export async function readBackCovers(
  part: string,
  migrationId: string,
  size: number,
  expected: number,
): Promise<boolean> {
  const text = await readText(readBackName(part));
  if (text === undefined) return false;
  const newest = new Map<string, ReadBackRecord>();
  for (const line of text.split("\n")) {
    const r = parseLine(line, Record);
    if (r?.migrationId === migrationId && r.end > r.start) newest.set(`${r.start}:${r.end}`, r);
  }
  let at = 0;
  let crc = 0;
  for (const r of [...newest.values()].sort((a, b) => a.start - b.start)) {
    if (r.start !== at || r.crc32c === undefined) return false;
    crc = crc32cCombine(crc, r.crc32c, r.end - r.start);
    at = r.end;
  }
  return at === size && crc >>> 0 === expected >>> 0;
}

/**
 * Removes the records (read-back and hashes) of a finalized or abandoned `.part` named
 * `partFile`, through the held directory `dir` where they are: a record that is not there (a
 * small volume keeps none) costs a stat, not a failed unlink.
 */
export function removeRecordsIn(dir: DirHandle, partFile: string): void {
  for (const name of [readBackName(partFile), hashesName(partFile)])
    if (dir.stat(name) !== undefined) dir.unlink(name, { ignoreMissing: true });
}

async function readText(file: string): Promise<string | undefined> {
  try {
    const fh = await openConfined(heldRoots(), file);
    try {
      return await fh.readFile("utf8");
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
}

function parseLine<T>(line: string, schema: z.ZodType<T>): T | undefined {
  if (line.length === 0) return undefined;
  try {
    const r = schema.safeParse(JSON.parse(line));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** This process's background read-backs: one at a time (each reads with several requests in flight). */
class ReadBacks {
  private tail: Promise<void> = Promise.resolve();
  private readonly pending = new Map<string, Set<Promise<void>>>();

  /** Reads [start, end) of `part` back after the batches queued before it; records it if it matches. */
  schedule(part: string, expected: ReadBackRecord, log: Logger): void {
    const job = this.tail.then(() => readBack(part, expected, log));
    this.tail = job;
    const set = this.pending.get(part) ?? new Set<Promise<void>>();
    set.add(job);
    this.pending.set(part, set);
    void job.finally(() => {
      set.delete(job);
      if (set.size === 0 && this.pending.get(part) === set) this.pending.delete(part);
    });
  }

  /** Resolves once every read-back of `part` scheduled so far in this process has ended. */
  async settled(part: string): Promise<void> {
    await Promise.all([...(this.pending.get(part) ?? [])]);
  }
}

export const readBacks = new ReadBacks();

async function readBack(part: string, expected: ReadBackRecord, log: Logger): Promise<void> {
  const range = { start: expected.start, end: expected.end };
  try {
    const fh = await openConfined(heldRoots(), part);
    try {
      const actual = await diskCrc32c(fh, part, expected.start, expected.end);
      if (actual !== expected.crc32c) {
        metrics.checksumMismatches.inc({ stage: "read-back" });
        log.warn(
          { ...range, expected: expected.crc32c, actual },
          "batch read back with a different CRC32C than its chunks; finalize will read the whole volume",
        );
        return;
      }
      // Finalized (renamed) or aborted meanwhile, by another process: a record now would be litter.
      const [now, read] = await Promise.all([inodeAt(part), fh.stat()]);
      if (now !== read.ino) return;
      await recordReadBack(part, expected);
      metrics.bytesVerified.inc(expected.end - expected.start);
    } finally {
      await fh.close();
    }
  } catch (err) {
    // The .part may be gone (finalized by another process, or aborted): nothing to record.
    log.warn({ err, ...range }, "batch not read back; finalize will read the whole volume");
  }
}

/** The inode at `part` beneath its held root, or undefined when it is gone. */
async function inodeAt(part: string): Promise<number | undefined> {
  return (await statConfined(heldRoots(), part).catch(() => undefined))?.ino;
}
