import { describe, expect, it } from "vitest";
import { batchKey, ResumeTable, writtenBefore } from "./resume.js";

const batch = { migrationId: "m", destDir: "d", destName: "disk.img", batch: 3 };
const token = { attempt: 1, delivery: 2 };

describe("ResumeTable", () => {
  it("hands a resuming session the committed prefix, as the sessions' maps stand when asked", () => {
    const t = new ResumeTable<string>();
    const written = new Map<number, string>([[8, "a"]]);
    t.track(batchKey(batch), token, written);
    written.set(9, "b"); // the live map: a chunk that landed after tracking counts
    written.set(11, "d"); // after a gap: not part of the prefix
    expect(t.committedPrefix(batchKey(batch), token, [8, 9, 10, 11])).toEqual(
      new Map([
        [8, "a"],
        [9, "b"],
      ]),
    );
    expect(t.committedPrefix(batchKey(batch), token, [8, 9, 10, 11], 1)).toEqual(new Map([[8, "a"]]));
  });

  it("joins the sessions of one attempt (stripes, a later delivery) and ignores other attempts", () => {
    const t = new ResumeTable<string>();
    t.track(batchKey(batch), token, new Map([[8, "old"]]));
    t.track(batchKey(batch), { attempt: 1, delivery: 3 }, new Map([[9, "b"]]));
    expect([...t.committedPrefix(batchKey(batch), { attempt: 1, delivery: 4 }, [8, 9, 10]).values()]).toEqual([
      "old",
      "b",
    ]);
    expect(t.committedPrefix(batchKey(batch), { attempt: 2, delivery: 1 }, [8])).toEqual(new Map());
    t.track(batchKey(batch), { attempt: 2, delivery: 1 }, new Map());
    expect(t.committedPrefix(batchKey(batch), token, [8])).toEqual(new Map());
    expect(t.committedPrefix(batchKey({ ...batch, batch: 4 }), token, [8])).toEqual(new Map());
  });

  it("tells a chunk another session of the attempt wrote (a resent committed chunk) from a new one", () => {
    const t = new ResumeTable<string>();
    const first = new Map([[8, "a"]]);
    const second = new Map<number, string>();
    t.track(batchKey(batch), token, first);
    t.track(batchKey(batch), token, second);
    expect(writtenBefore(t, batchKey(batch), token, 8, second)).toBe(true);
    expect(writtenBefore(t, batchKey(batch), token, 9, second)).toBe(false);
    expect(writtenBefore(t, batchKey(batch), token, 8, first)).toBe(false); // its own record
    expect(writtenBefore(t, batchKey(batch), { attempt: 2, delivery: 1 }, 8, second)).toBe(false);
  });

  it("forgets the least recently started batches and the oldest sessions beyond its bounds", () => {
    const t = new ResumeTable<string>(2, 2);
    for (const b of [1, 2, 3]) t.track(batchKey({ ...batch, batch: b }), token, new Map([[8, "x"]]));
    expect(t.committedPrefix(batchKey({ ...batch, batch: 1 }), token, [8]).size).toBe(0);
    expect(t.committedPrefix(batchKey({ ...batch, batch: 3 }), token, [8]).size).toBe(1);
    for (const at of [8, 9, 10]) t.track(batchKey(batch), token, new Map([[at, "y"]]));
    expect(t.committedPrefix(batchKey(batch), token, [8, 9, 10]).size).toBe(0);
    expect(t.committedPrefix(batchKey(batch), token, [9, 10]).size).toBe(2);
  });
});
