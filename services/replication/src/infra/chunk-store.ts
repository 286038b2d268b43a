import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, stat, unlink, utimes } from "node:fs/promises";
import { basename, join } from "node:path";
import { strongHash } from "../../../../native/index.js";
import { applyDelta, decodeDelta, encodeDelta, type Delta } from "../domain/store/delta.js";
import type { Manifest } from "../domain/store/manifest.js";
import { StoreIntegrityError } from "../domain/errors.js";
import { fsyncDir, writeFileAtomic } from "./durable-file.js";

/** The store lives under the destination's root: <root>/.dwcp-store/{chunks,manifests}. */
export const STORE_DIR = ".dwcp-store";
const HEX64 = /^[0-9a-f]{64}$/;
/** Half of retention's default grace period (10 min): see `has`. */
const TRUST_TOUCH_MS = 5 * 60_000;

export const blake3Hex = async (buf: Uint8Array): Promise<string> => (await strongHash(buf)).toString("hex");

/**
 * Content-addressed chunks named by their BLAKE3, shared by every VM and snapshot in the store.
 * A chunk is written to a temp name and only renamed to its hash once fsynced, so a present name
 * always holds complete, verified bytes. A chunk is stored whole (<hash>) or as a page delta
 * against another chunk (<hash>.d, see domain/store/delta.ts). The fsyncs are deferred to `flush` (called before a
 * manifest is written) and run in parallel there: one sync's chunks cost one wait, not one each.
 */
export class ChunkStore {
  private readonly dirs = new Set<string>();
  /** hash -> when this process last wrote or touched it (ms). */
  private readonly touched = new Map<string, number>();
  /** Written but not yet fsynced and renamed: hash -> temp and final path (and the rename in progress). */
  private readonly pending = new Map<string, { tmp: string; final: string; done?: Promise<void> }>();
  constructor(readonly dir: string) {}

  static async open(dir: string): Promise<ChunkStore> {
    await mkdir(join(dir, "chunks"), { recursive: true });
    await mkdir(join(dir, "manifests"), { recursive: true });
    return new ChunkStore(dir);
  }

  /** Where a whole chunk lives; a delta lives next to it with the suffix ".d". */
  chunkPath(hash: string): string {
    if (!HEX64.test(hash)) throw new RangeError(`not a BLAKE3 hex digest: ${hash.slice(0, 80)}`);
    return join(this.dir, "chunks", hash.slice(0, 2), hash);
  }

  /**
   * Present chunks are touched, so garbage collection's grace period protects a dedup hit. A chunk
   * this process wrote or touched less than half a grace period ago is still protected and is not
   * checked again: a commit names thousands of chunks, most of them unchanged.
   */
  async has(hash: string): Promise<boolean> {
    if (this.pending.has(hash)) return true;
    const seen = this.touched.get(hash);
    if (seen !== undefined && Date.now() - seen < TRUST_TOUCH_MS) return true;
    const now = new Date();
    for (const p of [this.chunkPath(hash), `${this.chunkPath(hash)}.d`]) {
      try {
        await utimes(p, now, now);
        this.touched.set(hash, now.getTime());
        return true;
      } catch {
        /* try the other form */
      }
    }
    this.touched.delete(hash);
    return this.pending.has(hash);
  }

  /**
   * `has` without touching the disk: pending, or written or touched by this process within half a
   * grace period. A false "no" only costs writing identical bytes again.
   */
  knows(hash: string): boolean {
    const seen = this.touched.get(hash);
    return this.pending.has(hash) || (seen !== undefined && Date.now() - seen < TRUST_TOUCH_MS);
  }

  private async write(hash: string, final: string, data: Uint8Array): Promise<void> {
    if (this.pending.has(hash)) return;
    const dir = join(this.dir, "chunks", hash.slice(0, 2));
    if (!this.dirs.has(dir)) await mkdir(dir, { recursive: true });
    const tmp = `${final}.tmp-${randomBytes(4).toString("hex")}`;
    const fh = await open(tmp, "w", 0o644);
    try {
      await fh.write(data);
    } finally {
      await fh.close();
    }
    this.dirs.add(dir);
    this.pending.set(hash, { tmp, final });
  }

  /** Stores bytes the caller has verified against `hash`; durable and visible after `flush`. */
  put(hash: string, data: Uint8Array): Promise<void> {
    return this.write(hash, this.chunkPath(hash), data);
  }

  /** Stores a chunk the caller has verified as a page delta against a stored base. */
  putDelta(hash: string, d: Delta): Promise<void> {
    return this.write(hash, `${this.chunkPath(hash)}.d`, encodeDelta(d));
  }

  /** The stored form of a chunk: its bytes, or a delta file. */
  private async stored(hash: string): Promise<{ delta: boolean; buf: Buffer }> {
    const p = this.pending.get(hash);
    const full = this.chunkPath(hash);
    const tries = [...(p ? [{ path: p.tmp, delta: p.final !== full }] : []), { path: full, delta: false }, { path: `${full}.d`, delta: true }];
    for (const t of tries) {
      try {
        return { delta: t.delta, buf: await readFile(t.path) };
      } catch (err) {
        // A pending chunk may have been renamed between the lookup and the read.
        if ((err as { code?: string }).code !== "ENOENT") throw err;
      }
    }
    throw new StoreIntegrityError(`chunk ${hash}`, "a stored chunk", "nothing");
  }

  /** A chunk's bytes, applying deltas down to a whole chunk, and how many deltas that took. */
  async resolve(hash: string): Promise<{ data: Buffer; depth: number }> {
    const s = await this.stored(hash);
    if (!s.delta) return { data: s.buf, depth: 0 };
    const d = decodeDelta(s.buf);
    const data = applyDelta((await this.resolve(d.base)).data, d);
    if (!data) throw new StoreIntegrityError(`delta of chunk ${hash}`, "a delta that fits its base", "one that does not");
    return { data, depth: d.depth };
  }

  /** The base a stored delta needs (undefined for a whole chunk): retention keeps it alive. */
  async deltaBase(hash: string): Promise<string | undefined> {
    const s = await this.stored(hash).catch(() => undefined);
    return s?.delta ? decodeDelta(s.buf).base : undefined;
  }

  /** Reads a chunk and, unless told not to, checks it hashes to its name. */
  async get(hash: string, verify = true): Promise<Buffer> {
    const { data } = await this.resolve(hash);
    if (verify) {
      const actual = await blake3Hex(data);
      if (actual !== hash) throw new StoreIntegrityError(`chunk ${hash}`, hash, actual);
    }
    return data;
  }

  private async finalize(e: { tmp: string; final: string }): Promise<void> {
    const fh = await open(e.tmp, "r+");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(e.tmp, e.final);
    this.touched.set(basename(e.final).slice(0, 64), Date.now());
  }

  /** fsyncs and renames every pending chunk, then fsyncs the directories they went into. */
  async flush(): Promise<void> {
    const entries = [...this.pending];
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < entries.length) {
        const [hash, e] = entries[next++]!;
        e.done ??= this.finalize(e);
        await e.done;
        this.pending.delete(hash);
      }
    };
    await Promise.all(Array.from({ length: 16 }, lane));
    await Promise.all([...this.dirs].map((d) => fsyncDir(d)));
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
        const name = f.endsWith(".d") ? f.slice(0, -2) : f;
        out.push({ path, ...(HEX64.test(name) ? { hash: name } : {}), mtimeMs: (await stat(path)).mtimeMs });
      }
    }
    return out;
  }

  async deleteFile(path: string): Promise<void> {
    this.touched.delete(basename(path).slice(0, 64));
    await unlink(path).catch(() => undefined);
  }
}
