import { describe, expect, it } from "vitest";
import { ResumeTable, runKey } from "./resume.js";

const run = {
  migrationId: "m",
  destDir: "d",
  destName: "disk.img",
  batch: 3,
  stripe: undefined,
  firstChunk: 8,
  chunkCount: 4,
};
const token = { attempt: 1, delivery: 2 };

describe("ResumeTable", () => {
  it("hands a resumed session the records the dropped session wrote, as they stand when asked", () => {
    const t = new ResumeTable<string>();
    const written = new Map<number, string>([[8, "a"]]);
    t.track(runKey(run), token, written);
    written.set(9, "b"); // the live map: a chunk that landed after tracking counts
    expect(t.resume(runKey(run), token, [8, 9])).toEqual(
      new Map([
        [8, "a"],
        [9, "b"],
      ]),
    );
  });

  it("refuses an unknown run, another token, a chunk that was not written, and a finished run", () => {
    const t = new ResumeTable<string>();
    const written = new Map<number, string>([[8, "a"]]);
    t.track(runKey(run), token, written);
    expect(t.resume(runKey({ ...run, stripe: "s1234567" }), token, [8])).toMatch(/no record/);
    expect(t.resume(runKey({ ...run, firstChunk: 9 }), token, [8])).toMatch(/no record/);
    expect(t.resume(runKey(run), { attempt: 2, delivery: 0 }, [8])).toMatch(/another attempt/);
    expect(t.resume(runKey(run), token, [8, 9])).toMatch(/offset 9/);
    t.done(runKey(run), written);
    expect(t.resume(runKey(run), token, [8])).toMatch(/no record/);
  });

  it("forgets the least recently started runs beyond its bound", () => {
    const t = new ResumeTable<string>(2);
    for (const batch of [1, 2, 3]) t.track(runKey({ ...run, batch }), token, new Map([[8, "x"]]));
    expect(t.resume(runKey({ ...run, batch: 1 }), token, [8])).toMatch(/no record/);
    expect(t.resume(runKey({ ...run, batch: 3 }), token, [8])).toBeInstanceOf(Map);
  });
});
