import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, stat, unlink, utimes } from "node:fs/promises";
import { join } from "node:path";
import { strongHash } from "../../../../native/index.js";
import type { Manifest } from "../domain/store/manifest.js";
import { StoreIntegrityError } from "../domain/errors.js";
import { fsyncDir, writeFileAtomic } from "./durable-file.js";

/** The store lives under the destination's root: <root>/.dwcp-store/{chunks,manifests}. */
export const STORE_DIR = ".dwcp-store";
const HEX64 = /^[0-9a-f]{64}$/;

export const blake3Hex = async (buf: Uint8Array): Promise<string> => (await strongHash(buf)).toString("hex");

/**
 * Content-addressed chunks named by their BLAKE3, shared by every VM and snapshot in the store.
 * A chunk is written to a temp name, fsynced and renamed, so a present name always holds
 * complete, verified bytes; `flush` fsyncs the directories touched, before a manifest names them.
 */
export class ChunkStore {
  private readonly dirty = new Set<string>();
  constructor(readonly dir: string) {}

  static async open(dir: string): Promise<ChunkStore> {
    await mkdir(join(dir, "chunks"), { recursive: true });
    await mkdir(join(dir, "manifests"), { recursive: true });
    return new ChunkStore(dir);
  }

  chunkPath(hash: string): string {
    if (!HEX64.test(hash)) throw new RangeError(`not a BLAKE3 hex digest: ${hash.slice(0, 80)}`);
    return join(this.dir, "chunks", hash.slice(0, 2), hash);
  }

  /** Present chunks are touched, so garbage collection's grace period protects a dedup hit. */
  async has(hash: string): Promise<boolean> {
    const p = this.chunkPath(hash);
    try {
      const now = new Date();
      await utimes(p, now, now);
      return true;
    } catch {
      return false;
    }
  }

  /** Stores bytes the caller has verified against `hash`. */
  async put(hash: string, data: Uint8Array): Promise<void> {
    const final = this.chunkPath(hash);
    const dir = join(this.dir, "chunks", hash.slice(0, 2));
    await mkdir(dir, { recursive: true });
    const tmp = `${final}.tmp-${randomBytes(4).toString("hex")}`;
    const fh = await open(tmp, "w", 0o644);
    try {
      await fh.write(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, final);
    this.dirty.add(dir);
  }

  /** Reads a chunk and checks it still hashes to its name. */
  async get(hash: string, verify = true): Promise<Buffer> {
    const data = await readFile(this.chunkPath(hash));
    if (verify) {
      const actual = await blake3Hex(data);
      if (actual !== hash) throw new StoreIntegrityError(`chunk ${hash}`, hash, actual);
    }
    return data;
  }

  async flush(): Promise<void> {
    const dirs = [...this.dirty];
    this.dirty.clear();
    await Promise.all(dirs.map((d) => fsyncDir(d)));
  }

  manifestRel(vm: string, snapshotId: string): string {
    return join("manifests", vm, `${snapshotId}.json`);
  }

  async writeManifest(m: Manifest): Promise<{ rel: string; blake3: string }> {
    const rel = this.manifestRel(m.vm, m.snapshotId);
    await mkdir(join(this.dir, "manifests", m.vm), { recursive: true });
    const text = Buffer.from(JSON.stringify(m));
    await writeFileAtomic(join(this.dir, rel), text);
    await fsyncDir(join(this.dir, "manifests"));
    return { rel, blake3: await blake3Hex(text) };
  }

  /** Reads a manifest and checks it is the one the log committed. */
  async readManifest(rel: string, expectedBlake3?: string): Promise<Manifest> {
    const text = await readFile(join(this.dir, rel));
    if (expectedBlake3 !== undefined) {
      const actual = await blake3Hex(text);
      if (actual !== expectedBlake3) throw new StoreIntegrityError(`manifest ${rel}`, expectedBlake3, actual);
    }
    return JSON.parse(text.toString("utf8")) as Manifest;
  }

  /** Manifest files per VM: {vm, snapshotId, rel, mtimeMs}. */
  async listManifests(): Promise<Array<{ vm: string; snapshotId: string; rel: string; mtimeMs: number }>> {
    const out: Array<{ vm: string; snapshotId: string; rel: string; mtimeMs: number }> = [];
    for (const vm of await readdir(join(this.dir, "manifests"))) {
      for (const f of await readdir(join(this.dir, "manifests", vm))) {
        if (!f.endsWith(".json")) continue;
        const rel = join("manifests", vm, f);
        out.push({ vm, snapshotId: f.slice(0, -5), rel, mtimeMs: (await stat(join(this.dir, rel))).mtimeMs });
      }
    }
    return out;
  }

  async deleteManifest(rel: string): Promise<void> {
    await unlink(join(this.dir, rel)).catch(() => undefined);
  }

  /** Every chunk with its mtime (temp files of interrupted writes included, as `tmp`). */
  async listChunks(): Promise<Array<{ path: string; hash?: string; mtimeMs: number }>> {
    const out: Array<{ path: string; hash?: string; mtimeMs: number }> = [];
    for (const sub of await readdir(join(this.dir, "chunks"))) {
      for (const f of await readdir(join(this.dir, "chunks", sub))) {
        const path = join(this.dir, "chunks", sub, f);
        out.push({ path, ...(HEX64.test(f) ? { hash: f } : {}), mtimeMs: (await stat(path)).mtimeMs });
      }
    }
    return out;
  }

  async deleteFile(path: string): Promise<void> {
    await unlink(path).catch(() => undefined);
  }
}
