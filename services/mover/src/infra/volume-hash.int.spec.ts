import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { crc32c, strongHashSync, volumeHash } from "#native/index.js";
import { hashesName, recordHashes, recordReadBack } from "./read-back.js";
import { diskDigests, encodeHashList, volumeHashOf, zeroChunkHash } from "./volume-hash.js";
import { finalizeVolumes, resolveRoots } from "./volumes.js";

const MiB = 1024 * 1024;
const CHUNK = MiB;
const silent = { warn: () => undefined, info: () => undefined } as never;

let work: string;
let roots: string[];
let root: string;
const dir = "hashed";
let content: Buffer;
const part = (): string => join(root, dir, "d0.part");

/** BLAKE3 of each CHUNK-sized slice of `bytes`, base64url. */
const chunkHashes = (bytes: Buffer): string[] => {
  const out: string[] = [];
  for (let at = 0; at < bytes.length; at += CHUNK)
    out.push(strongHashSync(bytes.subarray(at, at + CHUNK)).toString("base64url"));
  return out;
};

const finalize = (blake3: string | undefined, verify = true) =>
  finalizeVolumes(
    {
      op: "finalize",
      version: 1,
      migrationId: "m",
      destDir: dir,
      verify,
      chunkSizeBytes: CHUNK,
      volumes: [{ destName: "d0", sizeBytes: content.length, crc32c: crc32c(content), ...(blake3 ? { blake3 } : {}) }],
    },
    roots,
    silent,
  );

beforeAll(async () => {
  work = await realpath(await mkdtemp(join(tmpdir(), "dwcp-volume-hash-")));
  root = join(work, "root");
  await mkdir(root);
  roots = await resolveRoots([root]);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

beforeEach(async () => {
  await rm(join(root, dir), { recursive: true, force: true });
  await mkdir(join(root, dir));
  // 4 MiB + 5: data in chunks 0 and 2 and the last, chunks 1 and 3 holes.
  content = Buffer.alloc(4 * MiB + 5);
  randomBytes(70_000).copy(content, 11);
  randomBytes(4096).copy(content, 2 * MiB);
  randomBytes(5).copy(content, 4 * MiB);
  const fh = await open(part(), "w");
  for (const [at, len] of [
    [0, 70_011],
    [2 * MiB, 4096],
    [4 * MiB, 5],
  ] as const)
    await fh.write(content, at, len, at);
  await fh.close();
});

describe("diskDigests and zero chunks", () => {
  it("reads CRC32C and per-chunk BLAKE3 in one pass, holes hashed as their zeros", async () => {
    const fh = await open(part(), "r");
    try {
      const d = await diskDigests(fh, part(), content.length, CHUNK);
      expect(d.crc32c).toBe(crc32c(content));
      expect(d.chunkHashes).toEqual(chunkHashes(content));
    } finally {
      await fh.close();
    }
    expect(await zeroChunkHash(CHUNK)).toBe(strongHashSync(Buffer.alloc(CHUNK)).toString("base64url"));
    expect(volumeHashOf(chunkHashes(content))).toBe(
      volumeHash(Buffer.concat(chunkHashes(content).map((h) => Buffer.from(h, "base64url")))).toString("base64url"),
    );
  });
});

describe("finalize checks the volume's BLAKE3 against the log's", () => {
  it("accepts the log's hash from the disk when no batch recorded hashes, and removes the records", async () => {
    expect(await finalize(volumeHashOf(chunkHashes(content)))).toEqual({ ok: true, paths: [join(root, dir, "d0")] });
    expect(await readdir(join(root, dir))).toEqual(["d0"]);
    // Idempotent: finalized before, the hash is checked again on the final file.
    expect(await finalize(volumeHashOf(chunkHashes(content)))).toMatchObject({ ok: true });
  });

  it("refuses VOLUME_HASH_MISMATCH (a different volume under the log's CRC32C) and keeps the .part", async () => {
    const other = Buffer.from(content);
    other[12] = (other[12] ?? 0) ^ 1;
    const reply = await finalize(volumeHashOf(chunkHashes(other)));
    expect(reply).toMatchObject({ ok: false, reason: "VOLUME_HASH_MISMATCH" });
    expect((reply as { message: string }).message).not.toContain(root);
    expect(await readdir(join(root, dir))).toEqual(["d0.part"]);
    // Also with verify off: the hash is checked whether or not batches are read back.
    expect(await finalize(volumeHashOf(chunkHashes(other)), false)).toMatchObject({ reason: "VOLUME_HASH_MISMATCH" });
  });

  it("trusts hash records that cover the volume and build the log's hash, without reading it", async () => {
    const hashes = chunkHashes(content);
    for (const [start, end, from, to] of [
      [0, 2 * MiB, 0, 2],
      [2 * MiB, content.length, 2, 5],
    ] as const) {
      await recordReadBack(part(), { migrationId: "m", start, end, crc32c: crc32c(content.subarray(start, end)) });
      await recordHashes(
        part(),
        { migrationId: "m", start, end, blake3: encodeHashList(hashes.slice(from, to)) },
        silent,
      );
    }
    // A byte changed after the records: not seen, as for the CRC32C read-back records.
    const fh = await open(part(), "r+");
    await fh.write(Buffer.from([1]), 0, 1, 3 * MiB);
    await fh.close();
    expect(await finalize(volumeHashOf(hashes))).toMatchObject({ ok: true });
    expect(await readdir(join(root, dir))).toEqual(["d0"]);
  });

  it("reads the disk when recorded hashes disagree with the log: the disk decides", async () => {
    const hashes = chunkHashes(content);
    const wrong = [...hashes];
    wrong[0] = hashes[2] as string;
    await recordHashes(
      part(),
      { migrationId: "m", start: 0, end: content.length, blake3: encodeHashList(wrong) },
      silent,
    );
    expect(await finalize(volumeHashOf(hashes), false)).toMatchObject({ ok: true });
    expect(await readdir(join(root, dir))).toEqual(["d0"]);
  });

  it("checks only the CRC32C of a volume the log has no hash for (events of an older mover)", async () => {
    const warned: unknown[] = [];
    const log = { warn: (o: unknown) => warned.push(o), info: () => undefined } as never;
    const reply = await finalizeVolumes(
      {
        op: "finalize",
        version: 1,
        migrationId: "m",
        destDir: dir,
        verify: true,
        volumes: [{ destName: "d0", sizeBytes: content.length, crc32c: crc32c(content) }],
      },
      roots,
      log,
    );
    expect(reply).toMatchObject({ ok: true });
    expect(warned).toEqual([{ volume: "d0" }]);
    expect(hashesName(part())).toBe(`${part()}.blake3`);
  });
});
