import type { FileHandle } from "node:fs/promises";
import type { Socket } from "node:net";
import type { Logger } from "#common/logger.js";
import { chunkRange } from "../../domain/data-channel/batch.js";
import { MAX_BASE_SUMS, type BaseSum, type BatchBegin } from "../../domain/data-channel/frames.js";
import { basenameProblem } from "../../domain/paths.js";
import { hasDataIn } from "../extents.js";
import { PathNotFoundError } from "../../errors.js";
import { confine, openDirConfined } from "../volume-paths.js";
import { digestBase } from "./base-chunk.js";
import { openBase } from "./destination-file.js";
import { send } from "./server-batch.js";

/** Chunks hashed between two BASE_SUMS frames: the first ones reach the sender early. */
const FLUSH_EVERY = 16;

/**
 * The destination's side of BASE_SUMS (revision 1.1): the digests of an incremental migration's
 * base, chunk by chunk from the first, computed once per volume in this process and sent ahead on
 * every link of the migration that asked (BATCH_BEGIN `baseSums`), so that the source sends a
 * changed chunk's data without first referring to it and waiting for the miss. Each link gets the
 * run from chunk 0 in order: what was computed before it joined, then the rest as it comes. The
 * job stops when its last link leaves (closed, or authenticated for another migration). A base
 * that is missing or not a regular file gets no sums: the references find that out as before.
 */
export class BaseSumsJobs {
  private readonly jobs = new Map<string, SumsJob>();

  constructor(private readonly roots: readonly string[]) {}

  /**
   * Sends `begin`'s volume's sums on `socket` from chunk 0, tagged `id`; the returned function
   * stops that.
   */
  subscribe(begin: BatchBegin, id: number, socket: Socket, log: Logger): () => void {
    const key = [begin.migrationId, begin.destDir, begin.destName, begin.volumeSizeBytes, begin.chunkSizeBytes].join(
      "\0",
    );
    // A job that ended with no link left is forgotten, but never one that replaced it since.
    const forget = (job: SumsJob): void => {
      if (job.links.size === 0 && this.jobs.get(key) === job) this.jobs.delete(key);
    };
    let job = this.jobs.get(key);
    if (job === undefined) {
      const created = new SumsJob(begin, log);
      this.jobs.set(key, created);
      void created.run(this.roots).finally(() => forget(created));
      job = created;
    }
    const joined = job;
    joined.join(socket, id);
    return () => {
      joined.leave(socket);
      if (joined.links.size > 0) return;
      joined.stop();
      forget(joined);
    };
  }
}

class SumsJob {
  /** Each link, its tag, and the index of the first sum it has not been sent. */
  readonly links = new Map<Socket, { id: number; next: number }>();
  private readonly sums: BaseSum[] = [];
  private stopped = false;

  constructor(
    private readonly begin: BatchBegin,
    private readonly log: Logger,
  ) {}

  join(socket: Socket, id: number): void {
    this.links.set(socket, { id, next: 0 });
    this.flush();
  }

  leave(socket: Socket): void {
    this.links.delete(socket);
  }

  stop(): void {
    this.stopped = true;
  }

  async run(roots: readonly string[]): Promise<void> {
    const { volumeSizeBytes, chunkSizeBytes } = this.begin;
    let base: FileHandle | undefined;
    try {
      base = await openVolumeBase(roots, this.begin);
      if (base === undefined) return;
      const size = (await base.stat()).size;
      const buffer = Buffer.allocUnsafe(chunkSizeBytes);
      const chunks = Math.ceil(volumeSizeBytes / chunkSizeBytes);
      for (let i = 0; i < chunks && !this.stopped; i++) {
        const { offset, length } = chunkRange(volumeSizeBytes, chunkSizeBytes, i);
        this.sums.push(await sumOf(base, size, offset, buffer.subarray(0, length)));
        if (this.sums.length % FLUSH_EVERY === 0) this.flush();
      }
      this.flush();
      this.log.debug({ chunks: this.sums.length, stopped: this.stopped }, "base sums sent ahead");
    } catch (err) {
      // Only a hint: the references check the base as ever.
      this.log.warn({ err }, "base sums stopped");
    } finally {
      await base?.close();
    }
  }

  /** Sends every link the sums it has not had yet. */
  private flush(): void {
    for (const [socket, link] of this.links) {
      for (let at = link.next; at < this.sums.length; at += MAX_BASE_SUMS) {
        const sums = this.sums.slice(at, at + MAX_BASE_SUMS);
        send(socket, { kind: "BASE_SUMS", id: link.id, offset: at * this.begin.chunkSizeBytes, sums });
      }
      link.next = this.sums.length;
    }
  }
}

/** The base's digests of the chunk at `offset` (read into `into`), or none where it holds no data. */
async function sumOf(base: FileHandle, size: number, offset: number, into: Buffer): Promise<BaseSum> {
  if (offset + into.length > size || hasDataIn(base.fd, offset, offset + into.length) === false) return "none";
  const read = await digestBase(base, offset, into);
  return read.whole ? { crc32c: read.analysis.crc32c >>> 0, blake3: read.hash } : "none";
}

/** The volume's final file beneath the held root, as a batch opens it (destination-file.ts); undefined if none. */
async function openVolumeBase(roots: readonly string[], begin: BatchBegin): Promise<FileHandle | undefined> {
  if (basenameProblem(begin.destName) !== undefined) return undefined;
  let dirPath: string;
  try {
    dirPath = await confine(roots, begin.destDir, { mustExist: true });
  } catch (err) {
    if (err instanceof PathNotFoundError) return undefined;
    throw err;
  }
  const dir = openDirConfined(roots, dirPath);
  try {
    return await openBase(dir, begin.destName);
  } finally {
    dir.close();
  }
}
