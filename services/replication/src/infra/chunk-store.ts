import { mkdir } from "node:fs/promises";
import { join, posix, resolve } from "node:path";
import { openRootDir, strongHash, type DirHandle } from "#native/index.js";
import { StoreIntegrityError } from "../domain/errors.js";
import type { Manifest } from "../domain/store/manifest.js";
import {
  applyPages,
  cvsAt,
  decodeRecord,
  encodeRecord,
  type IndexEntry,
  type PageDelta,
  type PageSet,
} from "../domain/store/pack.js";
import { writeFileAtomic } from "./durable-file.js";
import { listDir, mtimeIn } from "./held-dir.js";
import { Pack } from "./pack-file.js";

/** The store lives under the destination's root: <root>/.dwcp-store/{packs,manifests}. */
export const STORE_DIR = ".dwcp-store";
const HEX64 = /^[0-9a-f]{64}$/;
/** Half of retention's default grace period (10 min): see `has`. */
const TRUST_TOUCH_MS = 5 * 60_000;
/** A chunk not in the index re-reads the pack directory at most this often. */
const RELOAD_ON_MISS_MS = 2_000;
/** A pack being written is sealed and a new one started past this size. */
const PACK_ROTATE_BYTES = 256 << 20;

export const blake3Hex = async (buf: Uint8Array): Promise<string> => (await strongHash(buf)).toString("hex");

/** Reusable buffers for `resolve`: records and a rebuilt chunk of up to their size. */
export interface Scratch {
  record: Buffer;
  keyframe: Buffer;
  chunk: Buffer;
}

export const scratchFor = (chunkBytes: number): Scratch => ({
  record: Buffer.allocUnsafe(chunkBytes + 1024),
  keyframe: Buffer.allocUnsafe(chunkBytes + 1024),
  chunk: Buffer.allocUnsafe(chunkBytes),
});

interface Located {
  pack: Pack;
  entry: IndexEntry;
}

/** A chunk's bytes and, when it is stored as a delta, the keyframe and pages that make it. */
export interface Resolved {
  data: Buffer;
  /** For a delta: its keyframe's hash and bytes, and the pages that differ from it. */
  keyframe?: { hash: string; data: Buffer; pages: number[] };
}

/**
 * Content-addressed chunks named by their BLAKE3, shared by every VM and snapshot in the store,
 * kept in pack files (domain/store/pack.ts): a chunk is a whole record or a page delta against a
 * whole one. Appends go to one open pack; `flush` (before a manifest is written) writes its index,
 * fsyncs it, renames it to its final name and fsyncs the directory, so a sync costs one fsync, not
 * one per chunk, and a pack under its final name is always complete. The index of every pack is
 * held in memory; another process (retention) may rewrite or delete packs, so a pack that is gone
 * makes the store re-read the directory. The store's directory and its packs/ and manifests/ are
 * held by fd from open to close: every file is created, opened, renamed and removed beneath them
 * with no symlink followed, so a directory swapped for a symlink cannot send a write elsewhere.
 */
export class ChunkStore {
  private readonly index = new Map<string, Located>();
  private readonly packs = new Map<string, Pack>();
  private readonly touched = new Map<Pack, number>();
  private writing: Pack | undefined;
  private starting: Promise<Pack> | undefined;
  private sealing: Array<Promise<void>> = [];
  private reloadedAt = 0;
  private constructor(
    private readonly root: DirHandle,
    private readonly packs_: DirHandle | undefined,
    private readonly manifests: DirHandle | undefined,
  ) {}

  /** Where the store is (messages and logs only: nothing is opened through it). */
  get dir(): string {
    return this.root.path;
  }

  get packDir(): string {
    return join(this.dir, "packs");
  }

  /**
   * Opens (and with `create`, makes) the store in directory `dir`, which is trusted as given (the
   * operator's or a confined caller's), and reads every pack's index.
   */
  static async open(dir: string, o: { create?: boolean } = {}): Promise<ChunkStore> {
    if (o.create ?? true) await mkdir(dir, { recursive: true });
    const root = openRootDir(resolve(dir));
    try {
      return await ChunkStore.openIn(root, o);
    } finally {
      root.close();
    }
  }

  /** Opens (and with `create`, makes) the store in the held directory `dir` (the caller keeps `dir`). */
  static async openIn(dir: DirHandle, o: { create?: boolean } = {}): Promise<ChunkStore> {
    const create = o.create ?? true;
    const root = dir.openDir("");
    const sub = async (name: string): Promise<DirHandle | undefined> => {
      if (create) return (await root.makeDirs(name)).dir;
      try {
        return root.openDir(name);
      } catch (err) {
        if ((err as { sysCode?: unknown }).sysCode === "ENOENT") return undefined;
        throw err;
      }
    };
    try {
      const s = new ChunkStore(root, await sub("packs"), await sub("manifests"));
      await s.reload();
      return s;
    } catch (err) {
      root.close();
      throw err;
    }
  }

  private get packDirHandle(): DirHandle {
    if (this.packs_ === undefined)
      throw Object.assign(new StoreIntegrityError(`store ${this.dir}`, "a packs directory", "none"), {
        sysCode: "ENOENT",
      });
    return this.packs_;
  }

  private manifestDir(): DirHandle {
    if (this.manifests === undefined)
      throw new StoreIntegrityError(`store ${this.dir}`, "a manifests directory", "none");
    return this.manifests;
  }

  /** Picks up packs written by others and forgets packs that are gone. */
  async reload(): Promise<void> {
    this.reloadedAt = Date.now();
    const names = new Set(
      (this.packs_ === undefined ? [] : await listDir(this.packs_))
        .filter((f) => f.endsWith(".pack"))
        .map((f) => f.slice(0, -5)),
    );
    for (const [name, p] of this.packs) {
      if (!p.sealed || names.has(name)) continue;
      this.packs.delete(name);
      this.touched.delete(p);
      for (const e of p.entries) if (this.index.get(e.hash)?.pack === p) this.index.delete(e.hash);
      await p.close();
    }
    for (const name of names) {
      if (this.packs.has(name)) continue;
      // A damaged pack: its chunks count as missing.
      const p = await Pack.load(this.packDirHandle, name).catch(() => undefined);
      if (!p) continue;
      this.packs.set(name, p);
      for (const entry of p.entries) if (!this.index.has(entry.hash)) this.index.set(entry.hash, { pack: p, entry });
    }
    for (const [hash, l] of this.index)
      if (!this.packs.has(l.pack.name) && l.pack !== this.writing) this.index.delete(hash);
  }

  private check(hash: string): void {
    if (!HEX64.test(hash)) throw new RangeError(`not a BLAKE3 hex digest: ${hash.slice(0, 80)}`);
  }

  /**
   * Whether the store holds a chunk. Its pack is touched, so retention's grace period protects a
   * dedup hit; a pack this process wrote or touched less than half a grace period ago is trusted
   * without asking the disk again (a commit names thousands of chunks in few packs).
   */
  async has(hash: string): Promise<boolean> {
    this.check(hash);
    for (let attempt = 0; attempt < 2; attempt++) {
      const l = this.index.get(hash);
      if (!l) {
        // Only retention elsewhere changes the packs of a store an agent writes: re-reading the
        // directory on every miss (a first sync asks about every chunk) would cost more than it finds.
        if (attempt === 0 && Date.now() - this.reloadedAt > RELOAD_ON_MISS_MS) await this.reload();
        continue;
      }
      if (!l.pack.sealed) return true;
      const seen = this.touched.get(l.pack);
      if (seen !== undefined && Date.now() - seen < TRUST_TOUCH_MS) return true;
      const now = new Date();
      try {
        await l.pack.touch(now);
        this.touched.set(l.pack, now.getTime());
        return true;
      } catch {
        await this.reload(); // rewritten or deleted by retention elsewhere
      }
    }
    return false;
  }

  /** `has` from memory only: a false "no" costs sending the chunk again. */
  knows(hash: string): boolean {
    const l = this.index.get(hash);
    if (!l) return false;
    const seen = this.touched.get(l.pack);
    return !l.pack.sealed || (seen !== undefined && Date.now() - seen < TRUST_TOUCH_MS);
  }

  private async target(): Promise<Pack> {
    if (this.writing && this.writing.bytes < PACK_ROTATE_BYTES) return this.writing;
    if (this.writing) {
      const full = this.writing;
      this.writing = undefined;
      this.sealing.push(full.seal());
    }
    this.starting ??= Pack.create(this.packDirHandle).then((p) => {
      this.writing = p;
      this.packs.set(p.name, p);
      this.starting = undefined;
      return p;
    });
    return this.starting;
  }

  private async append(hash: string, kind: "whole" | "delta", record: Buffer, base?: string): Promise<void> {
    this.check(hash);
    if (this.index.has(hash) && this.index.get(hash)?.pack.sealed === false) return;
    const pack = await this.target();
    const entry = pack.append(base === undefined ? { hash, kind } : { hash, kind, base }, record);
    this.index.set(hash, { pack, entry });
  }

  /** Stores bytes the caller has verified against `hash` (and their page chaining values); durable after `flush`. */
  putWhole(hash: string, data: Uint8Array, cvs?: Uint8Array): Promise<void> {
    return this.append(hash, "whole", encodeRecord(hash, "whole", { len: data.length, data, ...(cvs ? { cvs } : {}) }));
  }

  /**
   * What a new version of chunk `hash` (of `len` bytes) can be checked and stored against without
   * its data: the keyframe it is (or is a delta of), a copy of that keyframe's page chaining
   * values, and the pages by which `hash` differs from the keyframe. Reads only the values and a
   * delta's record, not the keyframe's data. Undefined when the keyframe has no stored values.
   */
  async keyframeCvs(hash: string, len: number): Promise<{ key: string; cvs: Buffer; older: PageSet } | undefined> {
    const l = this.index.get(hash);
    if (!l) return undefined;
    if (l.entry.kind === "whole") {
      const cvs = await this.cvsOf(l, len);
      return cvs && { key: hash, cvs, older: { pages: [], zero: [], data: new Uint8Array(0) } };
    }
    const r = await this.record(hash);
    if (r.kind !== "delta" || r.delta.len !== len) return undefined;
    const k = this.index.get(r.delta.base);
    const cvs = k?.entry.kind === "whole" ? await this.cvsOf(k, len) : undefined;
    return cvs && { key: r.delta.base, cvs, older: r.delta };
  }

  private async cvsOf(l: Located, len: number): Promise<Buffer | undefined> {
    const at = cvsAt(l.entry.length, len);
    return at === undefined
      ? undefined
      : Buffer.from(await l.pack.readPart(l.entry.offset, l.entry.length, at, l.entry.length - at));
  }

  /** Stores a verified chunk as pages against a whole chunk (its keyframe). */
  putDelta(hash: string, d: PageDelta): Promise<void> {
    const l = this.index.get(d.base);
    if (l?.entry.kind !== "whole")
      throw new StoreIntegrityError(`delta base of ${hash}`, "a whole chunk", l ? "a delta" : "nothing");
    return this.append(hash, "delta", encodeRecord(hash, "delta", { len: d.len, data: d.data, delta: d }), d.base);
  }

  private async record(hash: string, into?: Buffer): Promise<ReturnType<typeof decodeRecord>> {
    for (let attempt = 0; ; attempt++) {
      const l = this.index.get(hash);
      try {
        if (!l) throw new StoreIntegrityError(`chunk ${hash}`, "a stored chunk", "nothing");
        return decodeRecord(await l.pack.read(l.entry.offset, l.entry.length, into));
      } catch (err) {
        const missing =
          (err as { code?: string }).code === "ENOENT" || (err as { sysCode?: string }).sysCode === "ENOENT";
        if (attempt > 0 || (l && !missing)) throw err;
        await this.reload();
      }
    }
  }

  /**
   * A chunk's bytes (a delta applied to its keyframe), and the keyframe and pages of a delta.
   * With `scratch`, the result lives in those buffers (valid until they are reused).
   */
  async resolve(hash: string, scratch?: Scratch): Promise<Resolved> {
    const r = await this.record(hash, scratch?.record);
    if (r.kind === "whole") return { data: r.data };
    const key = await this.record(r.delta.base, scratch?.keyframe);
    if (key.kind !== "whole") throw new StoreIntegrityError(`keyframe of ${hash}`, "a whole chunk", "a delta");
    const data = applyPages(
      key.data,
      r.delta,
      scratch?.chunk && scratch.chunk.length >= r.delta.len ? scratch.chunk : undefined,
    );
    if (!data)
      throw new StoreIntegrityError(`delta of chunk ${hash}`, "a delta that fits its keyframe", "one that does not");
    return { data, keyframe: { hash: r.delta.base, data: key.data, pages: r.delta.pages } };
  }

  /**
   * The bytes of many chunks, unverified: whole records that lie back to back in a pack are read
   * with one pread of up to `spanBytes` (a restore reads a full sync's pack front to back),
   * deltas are resolved one by one. Results are in the order of `hashes`. With `into` (at least
   * `spanBytes`), whole chunks are views into it, valid until the next call with the same buffer.
   */
  async readMany(hashes: string[], spanBytes = 8 << 20, into?: Buffer): Promise<Buffer[]> {
    const out = new Array<Buffer>(hashes.length);
    let used = 0; // of `into`: every span read by this call gets its own part
    let i = 0;
    while (i < hashes.length) {
      const first = this.index.get(hashes[i]!);
      if (!first || first.entry.kind !== "whole" || !first.pack.sealed) {
        out[i] = (await this.resolve(hashes[i]!)).data;
        i++;
        continue;
      }
      let end = i + 1;
      let bytes = first.entry.length;
      for (let at = first.entry.offset + first.entry.length; end < hashes.length; end++) {
        const l = this.index.get(hashes[end]!);
        if (
          !l ||
          l.pack !== first.pack ||
          l.entry.kind !== "whole" ||
          l.entry.offset !== at ||
          bytes + l.entry.length > spanBytes
        )
          break;
        at += l.entry.length;
        bytes += l.entry.length;
      }
      const span = await first.pack.readAsync(first.entry.offset, bytes, into?.subarray(used));
      if (into && span.buffer === into.buffer) used += bytes;
      for (let k = i, off = 0; k < end; k++) {
        const len = this.index.get(hashes[k]!)!.entry.length;
        const r = decodeRecord(span.subarray(off, off + len));
        if (r.kind !== "whole") throw new StoreIntegrityError(`chunk ${hashes[k]}`, "a whole record", "a delta");
        out[k] = r.data;
        off += len;
      }
      i = end;
    }
    return out;
  }

  /** The keyframe a stored delta needs (undefined for a whole chunk): retention keeps it alive. */
  deltaBase(hash: string): string | undefined {
    return this.index.get(hash)?.entry.base;
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

  /** Seals the pack being written (index, fsync, rename) and fsyncs the pack directory. */
  async flush(): Promise<void> {
    await this.starting;
    const open = this.writing;
    this.writing = undefined;
    const sealing = [...this.sealing, ...(open ? [open.seal()] : [])];
    this.sealing = [];
    if (sealing.length === 0) return;
    await Promise.all(sealing);
    await this.packDirHandle.sync();
    const now = Date.now();
    if (open) this.touched.set(open, now);
  }

  manifestRel(vm: string, snapshotId: string): string {
    return posix.join("manifests", vm, `${snapshotId}.json`);
  }

  async writeManifest(m: Manifest): Promise<{ rel: string; blake3: string }> {
    const rel = this.manifestRel(m.vm, m.snapshotId);
    const { dir, created } = await this.manifestDir().makeDirs(m.vm);
    try {
      const text = Buffer.from(JSON.stringify(m));
      await writeFileAtomic(`${m.snapshotId}.json`, text, 0o644, dir);
      if (created) await this.manifestDir().sync();
      return { rel, blake3: await blake3Hex(text) };
    } finally {
      dir.close();
    }
  }

  /**
   * Reads a manifest and checks it is the one the log committed. `rel` (from the log) is opened
   * beneath the store's held directory: no `..`, no absolute path, no symlink.
   */
  async readManifest(rel: string, expectedBlake3?: string): Promise<Manifest> {
    const fh = await this.root.openFile(rel);
    let text: Buffer;
    try {
      text = await fh.readFile();
    } finally {
      await fh.close();
    }
    if (expectedBlake3 !== undefined) {
      const actual = await blake3Hex(text);
      if (actual !== expectedBlake3) throw new StoreIntegrityError(`manifest ${rel}`, expectedBlake3, actual);
    }
    return JSON.parse(text.toString("utf8")) as Manifest;
  }

  /** Manifest files per VM: {vm, snapshotId, rel, mtimeMs}. */
  async listManifests(): Promise<Array<{ vm: string; snapshotId: string; rel: string; mtimeMs: number }>> {
    const out: Array<{ vm: string; snapshotId: string; rel: string; mtimeMs: number }> = [];
    const manifests = this.manifestDir();
    for (const vm of await listDir(manifests)) {
      let dir: DirHandle;
      try {
        dir = manifests.openDir(vm);
      } catch {
        continue; // not a directory, or a symlink: not a VM's manifests
      }
      try {
        for (const f of await listDir(dir)) {
          if (!f.endsWith(".json")) continue;
          const mtimeMs = await mtimeIn(dir, f);
          if (mtimeMs !== undefined)
            out.push({ vm, snapshotId: f.slice(0, -5), rel: posix.join("manifests", vm, f), mtimeMs });
        }
      } finally {
        dir.close();
      }
    }
    return out;
  }

  deleteManifest(rel: string): Promise<void> {
    try {
      const dir = this.root.openDir(posix.dirname(rel));
      try {
        dir.unlink(posix.basename(rel), { ignoreMissing: true });
      } finally {
        dir.close();
      }
    } catch {
      // gone already, or not a manifest of this store
    }
    return Promise.resolve();
  }

  /** Closes every pack's descriptor and the held directories; the store is unusable afterwards. */
  async close(): Promise<void> {
    await Promise.all([...this.packs.values()].map((p) => p.close()));
    for (const d of [this.packs_, this.manifests, this.root]) d?.close();
  }

  /** Sealed packs (for retention) and where each chunk's live copy is. */
  sealedPacks(): Pack[] {
    return [...this.packs.values()].filter((p) => p.sealed);
  }

  isLiveCopy(pack: Pack, e: IndexEntry): boolean {
    return this.index.get(e.hash)?.pack === pack && this.index.get(e.hash)?.entry === e;
  }

  /** Copies `keep` of a pack into a new sealed pack, points the index at it, deletes the old one. */
  async rewrite(pack: Pack, keep: IndexEntry[]): Promise<void> {
    if (keep.length > 0) {
      const fresh = await Pack.create(this.packDirHandle);
      for (const e of keep) {
        const entry = fresh.append(
          e.base === undefined ? { hash: e.hash, kind: e.kind } : { hash: e.hash, kind: e.kind, base: e.base },
          await pack.read(e.offset, e.length),
        );
        this.index.set(e.hash, { pack: fresh, entry });
      }
      await fresh.seal();
      await this.packDirHandle.sync();
      this.packs.set(fresh.name, fresh);
    }
    this.packs.delete(pack.name);
    this.touched.delete(pack);
    await pack.close();
    try {
      this.packDirHandle.unlink(pack.fileName, { ignoreMissing: true });
    } catch {
      // removed by another process meanwhile
    }
  }

  /** Temp files of packs that were never sealed (a killed writer), by name in packs/, with their mtimes. */
  async strayTemps(): Promise<Array<{ name: string; mtimeMs: number }>> {
    const mine = new Set([...this.packs.values()].filter((p) => !p.sealed).map((p) => `${p.name}.pack.tmp`));
    const out: Array<{ name: string; mtimeMs: number }> = [];
    for (const f of this.packs_ === undefined ? [] : await listDir(this.packs_)) {
      if (!f.endsWith(".tmp") || mine.has(f)) continue;
      const mtimeMs = await mtimeIn(this.packDirHandle, f);
      if (mtimeMs !== undefined) out.push({ name: f, mtimeMs });
    }
    return out;
  }

  /** Removes a temp file strayTemps listed. */
  removeTemp(name: string): void {
    if (!name.endsWith(".tmp")) return;
    try {
      this.packDirHandle.unlink(name, { ignoreMissing: true });
    } catch {
      // removed by another process meanwhile
    }
  }
}
