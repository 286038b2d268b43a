import type { TransferredChunk } from "#schemas/index.js";
import { metrics } from "#common/metrics/registry.js";
import type { Logger } from "#common/logger.js";
import { batchProblem, chunkRange } from "../../domain/data-channel/batch.js";
import type { FenceTable } from "../../domain/data-channel/fence.js";
import { TransferAbortedError } from "../../errors.js";
import { keepsRecords, readBacks, recordHashes } from "../read-back.js";
import { chunkBuffers } from "./buffer-pool.js";
import { beginOf, type SendBatchOptions, type SendBatchResult } from "./client.js";
import { DestinationFile } from "./destination-file.js";
import { FencedError } from "./fenced.js";
import {
  expectedRange,
  hashRecord,
  markUnproven,
  withBatchClaim,
  type BatchHolder,
  type WrittenChunk,
} from "./server-batch.js";
import { SourceVolume } from "./source-volume.js";

/** Chunks of a local batch being read or written at once (each holds one pooled buffer). */
export const LOCAL_CHUNKS_IN_FLIGHT = 3;

/** What a local copy shares with this process's data server: its roots and its fence table. */
export interface LocalCopyContext {
  roots: readonly string[];
  fences: FenceTable<BatchHolder>;
  log: Logger;
}

/**
 * A batch whose destination is this very mover process (source and destination on one host):
 * read, check and write in one process, with no socket in between. The same steps as a batch
 * that crosses the data channel, minus the wire:
 *
 * - the batch is claimed in the data server's fence table first, so a local copy and a data
 *   channel session of the same batch fence each other exactly as two sessions do;
 * - each chunk is read and analyzed (CRC32C, BLAKE3, zero pages) into a pooled, aligned buffer and its
 *   non-zero segments are written from that buffer with DestinationFile (O_DIRECT for large
 *   aligned segments, holes for the gaps): the bytes written are the bytes checksummed, so
 *   there is no transit to check them against;
 * - the file is fsynced before the batch counts as done, and with `verify` the range is marked
 *   unproven first and read back from the disk in the background afterwards (read-back.ts), as
 *   for a received batch.
 *
 * Why not copy_file_range(2): the chunk's CRC32C needs the source bytes in memory anyway, and
 * on a file system without reflinks the kernel's copy costs what the pwrite from that buffer
 * costs (native/README.md).
 */
export async function copyBatchLocally(ctx: LocalCopyContext, o: SendBatchOptions): Promise<SendBatchResult> {
  const started = performance.now();
  const begin = beginOf(o);
  const problem = batchProblem(begin);
  if (problem !== undefined) throw new RangeError(`copyBatchLocally: ${problem}`);
  const log = ctx.log.child({
    migrationId: o.migrationId,
    batch: o.batch,
    attempt: o.attempt,
    host: o.sourceHost,
    path: "local",
  });
  const inflight = new Set<Promise<unknown>>();
  let fenced: FencedError | undefined;
  const holder: BatchHolder = {
    fence: async (err) => {
      fenced ??= err;
      await Promise.allSettled(inflight);
    },
  };
  return withBatchClaim(ctx.fences, begin, holder, log, async (holds) => {
    /** Throws if the batch was taken over or the migration aborted: checked before every write. */
    const check = (): void => {
      if (fenced !== undefined) throw fenced;
      if (!holds()) throw new FencedError(`batch ${o.batch} was handed to a newer sender`);
      if (o.signal?.aborted === true)
        throw new TransferAbortedError("batch transfer was aborted", { cause: o.signal.reason });
    };
    check();
    const source = await SourceVolume.open(o.sourcePath, o.volumeSizeBytes, o.sourceRoots);
    try {
      const file = await DestinationFile.open(ctx.roots, begin);
      try {
        await markUnproven(file.path, begin);
        const written = await copyChunks(o, source, file, inflight, check);
        await file.sync();
        check();
        const expected = expectedRange(begin, written);
        if (keepsRecords(begin.volumeSizeBytes)) {
          await recordHashes(file.path, hashRecord(begin, written), log);
          if (expected !== undefined) readBacks.schedule(file.path, expected, log);
        }
        const chunks: TransferredChunk[] = [...written]
          .sort((a, b) => a[0] - b[0])
          .map(([offset, c]) => ({
            offset,
            length: c.length,
            crc32c: c.crc32c,
            zero: c.zero,
            wireBytes: 0,
            blake3: c.blake3,
          }));
        const bytes = chunks.reduce((sum, c) => sum + c.length, 0);
        const zeroSkipped = chunks.reduce((sum, c) => sum + (c.zero ? c.length : 0), 0);
        const result = {
          chunks,
          bytes,
          wireBytes: 0,
          breakdown: { zeroSkipped, data: bytes - zeroSkipped, packedIn: 0, packedOut: 0, baseReused: 0 },
          compression: { codec: "none" as const, level: 0 },
          durationMs: performance.now() - started,
        };
        log.info({ bytes: result.bytes, durationMs: Math.round(result.durationMs) }, "batch copied locally");
        return result;
      } finally {
        await Promise.allSettled(inflight);
        await file.close();
      }
    } finally {
      await source.close();
    }
  });
}

type Written = Map<number, WrittenChunk & { zero: boolean }>;

/** Up to LOCAL_CHUNKS_IN_FLIGHT chunks read, analyzed and written at once, in offset order of start. */
async function copyChunks(
  o: SendBatchOptions,
  source: SourceVolume,
  file: DestinationFile,
  inflight: Set<Promise<unknown>>,
  check: () => void,
): Promise<Written> {
  const written: Written = new Map();
  let failure: Error | undefined;
  const copyOne = async (index: number): Promise<void> => {
    const { offset, length } = chunkRange(o.volumeSizeBytes, o.chunkSizeBytes, index);
    const buffer = chunkBuffers.take(o.chunkSizeBytes);
    try {
      const c = await source.prepare(offset, length, buffer);
      check();
      await file.writeChunk(c.offset, c.length, c.segments, c.data);
      if (!c.zero) metrics.bytesWritten.inc(c.length);
      written.set(c.offset, { length: c.length, crc32c: c.crc32c, zero: c.zero, blake3: c.blake3 });
      o.onChunk?.({
        offset: c.offset,
        length: c.length,
        crc32c: c.crc32c,
        zero: c.zero,
        wireBytes: 0,
        blake3: c.blake3,
      });
    } finally {
      chunkBuffers.give(buffer);
    }
  };
  for (let i = 0; i < o.chunkCount && failure === undefined; i++) {
    while (inflight.size >= LOCAL_CHUNKS_IN_FLIGHT) await Promise.race(inflight);
    if (failure !== undefined) break;
    const work: Promise<void> = copyOne(o.firstChunk + i)
      .catch((err: unknown) => {
        failure ??= err instanceof Error ? err : new Error(String(err));
      })
      .finally(() => inflight.delete(work));
    inflight.add(work);
  }
  await Promise.all(inflight);
  if (failure !== undefined) throw failure;
  return written;
}
