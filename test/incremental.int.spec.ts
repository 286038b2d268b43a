import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration, type MigrationResult } from "../cli/migrate.js";
import { sha256File } from "../cli/verify.js";
import { cliOf, eventsOf, startTestStack } from "./support/stack.js";

const KiB = 1024;
const CHUNK = 256 * KiB;
const CHUNKS = 64;
type TestStack = Awaited<ReturnType<typeof startTestStack>>;

/** A 16 MiB image of random chunks, every 8th chunk zero (a hole). */
function image(): Buffer {
  const bytes = Buffer.alloc(CHUNKS * CHUNK);
  for (let i = 0; i < CHUNKS; i++) if (i % 8 !== 7) randomBytes(CHUNK).copy(bytes, i * CHUNK);
  return bytes;
}

/** Non-zero chunks of `now` that `before` holds at the same offset, in bytes. */
function unchangedBytes(now: Buffer, before: Buffer): number {
  let same = 0;
  for (let at = 0; at < now.length; at += CHUNK) {
    const c = now.subarray(at, at + CHUNK);
    if (c.some((b) => b !== 0) && c.equals(before.subarray(at, at + c.length))) same += c.length;
  }
  return same;
}

/** Bytes of the non-zero chunks. */
function dataBytes(bytes: Buffer): number {
  let n = 0;
  for (let at = 0; at < bytes.length; at += CHUNK) {
    const c = bytes.subarray(at, at + CHUNK);
    if (c.some((b) => b !== 0)) n += c.length;
  }
  return n;
}

describe("incremental migration onto an earlier copy", () => {
  let stack: TestStack;
  let source: string;
  const opts = { chunkSizeBytes: CHUNK, batchSizeBytes: 16 * CHUNK, compression: "none" as const };
  const migrate = (dir: string, incremental: boolean): Promise<MigrationResult> =>
    runMigration(
      stack.nats,
      buildStart({
        vm: "inc",
        source: { host: "a", volumes: [{ path: "vms/inc/disk.img", kind: "disk" }] },
        destination: { host: "b", dir },
        options: { ...opts, ...(incremental ? { incremental: true } : {}) },
      }),
      { timeoutMs: 60_000 },
    );
  const place = async (rel: string, bytes: Buffer): Promise<string> => {
    const path = join(stack.root("b"), rel);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, bytes);
    return path;
  };
  const baseReusedInEvents = async (id: string): Promise<number> =>
    (await eventsOf(stack, id))
      .map((e) => e.event)
      .reduce((n, e) => n + (e.type === "ChunkBatchTransferred" ? (e.breakdown?.baseReused ?? 0) : 0), 0);

  beforeAll(async () => {
    stack = await startTestStack();
    source = join(stack.root("a"), "vms/inc/disk.img");
    await mkdir(dirname(source), { recursive: true });
  });
  afterAll(async () => stack?.cleanup());

  it("sends only the changed chunks, and the destination is the new source byte for byte", async () => {
    const first = image();
    await writeFile(source, first);
    expect(await migrate("in/inc", false)).toMatchObject({ state: "completed" });
    const dest = join(stack.root("b"), "in/inc/disk.img");

    // Two chunks rewritten, a hole filled, a chunk zeroed, and the image grown by 300 KiB.
    const next = Buffer.concat([first, randomBytes(300 * KiB)]);
    randomBytes(CHUNK).copy(next, 3 * CHUNK);
    randomBytes(CHUNK).copy(next, 20 * CHUNK);
    randomBytes(CHUNK).copy(next, 7 * CHUNK);
    next.fill(0, 10 * CHUNK, 11 * CHUNK);
    await writeFile(source, next);

    const refused = await migrate("in/inc", false);
    expect(refused).toMatchObject({ state: "rejected", reason: "DESTINATION_EXISTS" });

    const r = await migrate("in/inc", true);
    expect(r).toMatchObject({ state: "completed", bytes: next.length });
    expect(await sha256File(dest)).toBe(await sha256File(source));
    const reused = unchangedBytes(next, first);
    expect(reused).toBe((CHUNKS - 8 - 3) * CHUNK);
    expect(r.baseReusedBytes).toBe(reused);
    expect(await baseReusedInEvents(r.migrationId)).toBe(reused);
    const status = await cliOf(stack)("status", r.migrationId, "--json");
    expect(JSON.parse(status.stdout)).toMatchObject({ state: "completed", baseReusedBytes: reused });
    // The changed data (3 chunks and the 300 KiB grown) plus headers: nothing else crossed.
    const changed = 3 * CHUNK + 300 * KiB;
    expect(r.wireBytes).toBeGreaterThan(changed);
    expect(r.wireBytes).toBeLessThan(changed + 64 * KiB);
  });

  it("without a base file, is a normal migration", async () => {
    const r = await migrate("in/fresh", true);
    expect(r).toMatchObject({ state: "completed" });
    expect(r.baseReusedBytes).toBeUndefined();
    expect(await sha256File(join(stack.root("b"), "in/fresh/disk.img"))).toBe(await sha256File(source));
    // Every data byte crossed, plus headers and the few references sent before NO_BASE came back.
    const data = dataBytes(await readFile(source));
    expect(r.wireBytes).toBeGreaterThan(data);
    expect(r.wireBytes).toBeLessThan(data + 64 * KiB);
  });

  it("a stale or foreign base never reaches the destination: its chunks are sent", async () => {
    const now = await readFile(source);
    // Stale: one chunk differs, and the base is longer than the volume (the image shrank).
    const stale = Buffer.concat([now, randomBytes(CHUNK)]);
    stale[5 * CHUNK + 123] = (stale[5 * CHUNK + 123] ?? 0) ^ 0xff;
    const staleBase = await place("in/stale/disk.img", stale);
    const r = await migrate("in/stale", true);
    expect(r).toMatchObject({ state: "completed" });
    expect(await sha256File(staleBase)).toBe(await sha256File(source));
    expect(r.baseReusedBytes).toBe(unchangedBytes(now, stale));
    expect(r.baseReusedBytes).toBeLessThan(unchangedBytes(now, now));

    // Foreign: nothing matches; the batch stops referring after a few misses.
    const foreignBase = await place("in/foreign/disk.img", randomBytes(now.length));
    const f = await migrate("in/foreign", true);
    expect(f).toMatchObject({ state: "completed" });
    expect(await sha256File(foreignBase)).toBe(await sha256File(source));
    expect(f.baseReusedBytes).toBeUndefined();
    expect(f.wireBytes).toBeLessThan(dataBytes(now) + 64 * KiB);
  });

  it("replaces an earlier copy on the same host too (the local copy writes every chunk)", async () => {
    const base = join(stack.root("a"), "local/disk.img");
    await mkdir(dirname(base), { recursive: true });
    await writeFile(base, randomBytes(CHUNK));
    const r = await runMigration(
      stack.nats,
      buildStart({
        vm: "inc",
        source: { host: "a", volumes: [{ path: "vms/inc/disk.img", kind: "disk" }] },
        destination: { host: "a", dir: "local" },
        options: { ...opts, incremental: true },
      }),
      { timeoutMs: 60_000 },
    );
    expect(r).toMatchObject({ state: "completed", wireBytes: 0 });
    expect(await sha256File(base)).toBe(await sha256File(source));
  });

  it("refuses a base that is not a regular file", async () => {
    await mkdir(join(stack.root("b"), "in/dir/disk.img"), { recursive: true });
    expect(await migrate("in/dir", true)).toMatchObject({ state: "rejected", reason: "DESTINATION_EXISTS" });
  });
});
