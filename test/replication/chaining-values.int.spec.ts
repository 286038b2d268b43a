// The destination agent checks a changed chunk from its keyframe's stored page chaining values
// when it can, and rebuilds it from the base's data when it cannot: a store written without
// those values, a hash that does not match. Real store files in a temp dir, frames as a source
// sends them.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { strongHashSync } from "#native/index.js";
import { DestinationAgent } from "../../services/replication/src/app/destination.js";
import {
  decodeFrame,
  encodeFrame,
  type PutChunk,
  type Reply,
} from "../../services/replication/src/domain/store/frames.js";

const PAGE = 4096;
const LEN = 16 * PAGE;
const hex = (b: Uint8Array): string => strongHashSync(b).toString("hex");
const page = (v: number): Buffer => Buffer.alloc(PAGE, v);

/** A chunk of LEN bytes, page j filled with fill(j). */
const chunk = (fill: (j: number) => number): Buffer =>
  Buffer.concat(Array.from({ length: LEN / PAGE }, (_, j) => page(fill(j))));

async function put(agent: DestinationAgent, chunks: Array<{ c: PutChunk; data: Buffer }>): Promise<Reply> {
  const payload = Buffer.concat(chunks.map((x) => x.data));
  const reply = await agent.handle(
    encodeFrame(
      { kind: "put", version: 1, chunks: chunks.map((x) => x.c), codec: "none", rawLength: payload.length },
      payload,
    ),
  );
  return decodeFrame<Reply>(reply).header;
}

/** The put of `next` against `base` as a source sends it: the listed pages, zero pages as flags. */
function changed(base: string, next: Buffer, pages: number[]): { c: PutChunk; data: Buffer } {
  const zero = pages.filter((j) => next.subarray(j * PAGE, (j + 1) * PAGE).every((b) => b === 0));
  const data = Buffer.concat(
    pages.filter((j) => !zero.includes(j)).map((j) => next.subarray(j * PAGE, (j + 1) * PAGE)),
  );
  return { c: { hash: hex(next), base, len: LEN, pages, zero, bytes: data.length }, data };
}

describe("changed chunks checked from page chaining values", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "dwcp-cvs-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("stores versions as deltas of a keyframe without reading it, and each reads back whole", async () => {
    const agent = await DestinationAgent.open(join(dir, "a"));
    const v1 = chunk((j) => j + 1);
    expect(
      await put(agent, [{ c: { hash: hex(v1), base: null, len: LEN, pages: null, zero: [], bytes: LEN }, data: v1 }]),
    ).toMatchObject({ outcomes: ["stored"] });
    await agent.store.flush(); // sealed, as after a commit
    // v2: two pages changed, one zeroed; v3 (base v2, itself a delta): one of them again, another.
    const v2 = chunk((j) => (j === 3 ? 90 : j === 5 ? 0 : j === 9 ? 91 : j + 1));
    const v3 = chunk((j) => (j === 3 ? 92 : j === 5 ? 0 : j === 9 ? 91 : j === 12 ? 93 : j + 1));
    expect(await put(agent, [changed(hex(v1), v2, [3, 5, 9])])).toMatchObject({ outcomes: ["stored"] });
    await agent.store.flush();
    expect(await put(agent, [changed(hex(v2), v3, [3, 12])])).toMatchObject({ outcomes: ["stored"] });
    expect(agent.counters).toEqual({ fromChainingValues: 2, rebuilt: 0 });
    expect(agent.store.deltaBase(hex(v2))).toBe(hex(v1));
    expect(agent.store.deltaBase(hex(v3))).toBe(hex(v1)); // stacked on the keyframe, not on v2
    expect((await agent.store.get(hex(v2))).equals(v2)).toBe(true); // get() checks the BLAKE3
    expect((await agent.store.get(hex(v3))).equals(v3)).toBe(true);
    await agent.store.close();
  });

  it("a hash the pages do not give, and a keyframe stored without values, go the rebuilding way", async () => {
    const agent = await DestinationAgent.open(join(dir, "b"));
    const v1 = chunk((j) => j + 40);
    await agent.store.putWhole(hex(v1), v1); // no chaining values: a store written before they existed
    await agent.store.flush();
    const v2 = chunk((j) => (j === 0 ? 99 : j + 40));
    expect(await put(agent, [changed(hex(v1), v2, [0])])).toMatchObject({ outcomes: ["stored"] });
    expect(agent.counters).toEqual({ fromChainingValues: 0, rebuilt: 1 });
    expect((await agent.store.get(hex(v2))).equals(v2)).toBe(true);

    const w1 = chunk((j) => j + 60);
    expect(
      await put(agent, [{ c: { hash: hex(w1), base: null, len: LEN, pages: null, zero: [], bytes: LEN }, data: w1 }]),
    ).toMatchObject({ outcomes: ["stored"] });
    await agent.store.flush();
    const lie = changed(
      hex(w1),
      chunk((j) => (j === 2 ? 7 : j + 60)),
      [2],
    );
    lie.c.hash = hex(chunk((j) => (j === 2 ? 8 : j + 60))); // claims other bytes than it carries
    expect(await put(agent, [lie])).toMatchObject({
      outcomes: ["need-full"],
      reasons: ["rebuilt chunk does not match its BLAKE3"],
    });
    expect(agent.counters).toEqual({ fromChainingValues: 0, rebuilt: 2 });
    expect(agent.store.knows(lie.c.hash)).toBe(false);
    await agent.store.close();
  });
});
