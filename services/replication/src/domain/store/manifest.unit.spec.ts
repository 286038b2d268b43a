import { describe, expect, it } from "vitest";
import {
  applyChanges,
  changedPages,
  chunkCount,
  chunkLength,
  manifestProblem,
  referencedChunks,
  selectPrunable,
  volumeChanges,
  type Manifest,
} from "./manifest.js";
import { decodeFrame, encodeFrame, type Request } from "./frames.js";

const snaps = ["01", "02", "03", "04"].map((h) => ({ snapshotId: `s${h}`, takenAt: `2026-01-01T${h}:00:00Z` }));
const now = Date.parse("2026-01-01T04:30:00Z");

describe("retention", () => {
  it("keeps the newest N and never the last one away", () => {
    expect(selectPrunable(snaps, { keep: 2 }, now)).toEqual(["s01", "s02"]);
    expect(selectPrunable(snaps, { keep: 0 }, now)).toEqual(["s01", "s02", "s03"]);
    expect(selectPrunable(snaps, {}, now)).toEqual([]);
  });
  it("keeps those younger than a duration, and the newest even when all are older", () => {
    expect(selectPrunable(snaps, { keepForMs: 2 * 3_600_000 }, now)).toEqual(["s01", "s02"]);
    expect(selectPrunable(snaps, { keepForMs: 1 }, now)).toEqual(["s01", "s02", "s03"]);
  });
  it("collects every referenced chunk, skipping zero chunks", () => {
    const m = (chunks: Array<string | null>): Manifest => ({
      format: "dwcp-manifest",
      version: 1,
      vm: "v",
      snapshotId: "s",
      takenAt: "x",
      chunkSizeBytes: 4096,
      volumes: [{ name: "d", sizeBytes: chunks.length * 4096, chunks }],
    });
    expect([...referencedChunks([m(["a", null, "b"]), m(["b", "c"])])].sort()).toEqual(["a", "b", "c"]);
  });
});

describe("change detection", () => {
  const fp = (...v: number[]) => BigUint64Array.from(v.map(BigInt));
  it("reports changed fingerprints and pages the old version lacked", () => {
    expect(changedPages(fp(1, 2, 3), fp(1, 9, 3), 0, false, 3)).toEqual([1]);
    expect(changedPages(fp(3, 4), fp(1, 2, 3), 2, true, 4)).toEqual([0, 1]);
    expect(changedPages(fp(1, 2), undefined, 0, false, 2)).toEqual([0, 1]);
  });
  it("re-sends the old last page when the size changed (a partial page's fingerprint is blind past it)", () => {
    expect(changedPages(fp(1, 2, 3, 4), fp(1, 2, 3), 0, true, 4)).toEqual([2, 3]);
    expect(changedPages(fp(1, 2), fp(1, 2, 3), 0, true, 2)).toEqual([1]);
  });
  it("splits a volume into chunks with a short last one", () => {
    expect(chunkCount(10_000, 4096)).toBe(3);
    expect([0, 1, 2, 3].map((i) => chunkLength(10_000, 4096, i))).toEqual([4096, 4096, 1808, 0]);
  });
});

describe("frames", () => {
  it("round-trip a header and payload and refuse a truncated frame", () => {
    const req: Request = {
      kind: "put",
      version: 1,
      chunks: [{ hash: "f".repeat(64), base: null, len: 8192, pages: [1], zero: [], bytes: 4096 }],
      codec: "none",
      rawLength: 4096,
    };
    const f = encodeFrame(req, Buffer.alloc(4096, 7));
    const { header, payload } = decodeFrame<Request>(f);
    expect(header).toEqual(req);
    expect(payload.length).toBe(4096);
    expect(() => decodeFrame(f.subarray(0, 10))).toThrow(RangeError);
  });
});

describe("manifest validation", () => {
  const m = (name: string, sizeBytes = 8192, chunks: Array<string | null> = [null, null]): Manifest => ({
    format: "dwcp-manifest",
    version: 1,
    vm: "v",
    snapshotId: "s",
    takenAt: "x",
    chunkSizeBytes: 4096,
    volumes: [{ name, sizeBytes, chunks }],
  });
  it("accepts a plain volume and refuses names that would leave the restore directory", () => {
    expect(manifestProblem(m("disk.img"))).toBeUndefined();
    for (const bad of ["../etc/passwd", "a/b", "..", ""])
      expect(manifestProblem(m(bad)), bad).toMatch(/plain file name/);
  });
  it("refuses a chunk list that does not match the size", () => {
    expect(manifestProblem(m("d", 8193))).toMatch(/lists 2 chunks/);
  });
});

describe("a manifest as changes to its parent", () => {
  const h = (c: string): string => c.repeat(64);
  const parent = [
    { name: "d", sizeBytes: 4 * 4096, chunks: [h("a"), null, h("b"), h("c")] },
    { name: "m", sizeBytes: 2 * 4096, chunks: [h("d"), h("e")] },
  ];
  it("lists only the chunks that differ, and rebuilds the volumes from them", () => {
    const next = [
      { name: "m", sizeBytes: 3 * 4096, chunks: [h("d"), h("f"), null] }, // grown by a zero chunk
      { name: "d", sizeBytes: 3 * 4096 - 100, chunks: [null, null, h("b")] }, // shrunk
    ];
    const changes = volumeChanges(parent, next);
    expect(changes).toEqual([
      { name: "m", sizeBytes: 3 * 4096, changes: [{ index: 1, hash: h("f") }] },
      { name: "d", sizeBytes: 3 * 4096 - 100, changes: [{ index: 0, hash: null }] },
    ]);
    expect(applyChanges(parent, 4096, changes!)).toEqual(next);
    expect(parent[0]!.chunks).toEqual([h("a"), null, h("b"), h("c")]); // the parent is not changed
  });
  it("gives up on a volume the parent lacks, and refuses changes that do not fit", () => {
    expect(volumeChanges(parent, [{ name: "new", sizeBytes: 4096, chunks: [null] }])).toBeUndefined();
    expect(applyChanges(parent, 4096, [{ name: "new", sizeBytes: 4096, changes: [] }])).toMatch(/not in the parent/);
    expect(applyChanges(parent, 4096, [{ name: "m", sizeBytes: 4096, changes: [{ index: 1, hash: null }] }])).toMatch(
      /chunk 1 of 1/,
    );
  });
});
