import { open, rename, unlink, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { fsyncDir } from "#common/fs.js";

export { fsyncDir };

/**
 * Writes `path` crash-safely: everything goes to `path.tmp`, which is fsynced, renamed over
 * `path`, and the directory fsynced. A crash leaves either the old file or the new one.
 */
export class AtomicFile {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  /** Writes are chained so concurrent callers never reorder them. */
  private tail: Promise<void> = Promise.resolve();
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
  ) {}

  static async create(path: string, mode = 0o644): Promise<AtomicFile> {
    return new AtomicFile(path, await open(`${path}.tmp`, "w", mode));
  }

  /** Buffers up to 1 MiB before writing, so a million small lines are not a million syscalls. */
  async write(chunk: Buffer): Promise<void> {
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    if (this.bufferedBytes >= 1 << 20) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.bufferedBytes === 0) return;
    const data = Buffer.concat(this.buffered, this.bufferedBytes);
    this.buffered = [];
    this.bufferedBytes = 0;
    const p = this.tail.then(async () => void (await this.fh.write(data)));
    this.tail = p;
    await p;
  }

  async commit(): Promise<void> {
    await this.flush();
    await this.tail;
    await this.fh.sync();
    await this.fh.close();
    await rename(`${this.path}.tmp`, this.path);
    await fsyncDir(dirname(this.path));
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await unlink(`${this.path}.tmp`).catch(() => undefined);
  }
}

/** Writes a whole small file crash-safely. */
export async function writeFileAtomic(path: string, data: Buffer | string, mode = 0o644): Promise<void> {
  const f = await AtomicFile.create(path, mode);
  try {
    await f.write(typeof data === "string" ? Buffer.from(data) : data);
    await f.commit();
  } catch (err) {
    await f.abort();
    throw err;
  }
}
