import { constants, open, rename, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { fsyncDir } from "#common/fs.js";
import type { DirHandle } from "#native/index.js";

export { fsyncDir };

/** Where an AtomicFile lives: by path, or by name beneath a held directory. */
interface Place {
  rename(from: string, to: string): Promise<void>;
  unlink(name: string): Promise<void>;
  sync(): Promise<void>;
}

/**
 * Writes a file crash-safely: everything goes to `<name>.tmp`, which is fsynced, renamed over
 * `<name>`, and the directory fsynced. A crash leaves either the old file or the new one.
 */
export class AtomicFile {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  /** Writes are chained so concurrent callers never reorder them. */
  private tail: Promise<void> = Promise.resolve();
  private constructor(
    /** The file's path (by path) or name (beneath a held directory). */
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly place: Place,
  ) {}

  static async create(path: string, mode = 0o644): Promise<AtomicFile> {
    const place: Place = {
      rename: (from, to) => rename(from, to),
      unlink: (name) => unlink(name),
      sync: () => fsyncDir(dirname(path)),
    };
    return new AtomicFile(path, await open(`${path}.tmp`, "w", mode), place);
  }

  /** The file `name` in the held directory `dir`: created, renamed and removed beneath its fd. */
  static async createIn(dir: DirHandle, name: string, mode = 0o644): Promise<AtomicFile> {
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
    const fh = await dir.openFile(`${basename(name)}.tmp`, { flags, mode });
    const place: Place = {
      rename: (from, to) => Promise.resolve(dir.rename(from, to)),
      unlink: (n) => Promise.resolve(dir.unlink(n, { ignoreMissing: true })),
      sync: () => dir.sync(),
    };
    return new AtomicFile(basename(name), fh, place);
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
    await this.place.rename(`${this.path}.tmp`, this.path);
    await this.place.sync();
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await this.place.unlink(`${this.path}.tmp`).catch(() => undefined);
  }
}

/** Writes a whole small file crash-safely (by path, or by name beneath the held directory `dir`). */
export async function writeFileAtomic(
  path: string,
  data: Buffer | string,
  mode = 0o644,
  dir?: DirHandle,
): Promise<void> {
  const f = dir === undefined ? await AtomicFile.create(path, mode) : await AtomicFile.createIn(dir, path, mode);
  try {
    await f.write(typeof data === "string" ? Buffer.from(data) : data);
    await f.commit();
  } catch (err) {
    await f.abort();
    throw err;
  }
}
