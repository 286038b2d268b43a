import { describe, expect, it } from "vitest";
import { Finalizes } from "./finalizes.js";

/** A finalize the test ends. */
function job() {
  let end!: (r: string) => void;
  let fail!: (e: Error) => void;
  let starts = 0;
  const start = (): Promise<string> => {
    starts++;
    return new Promise<string>((resolve, reject) => {
      end = resolve;
      fail = reject;
    });
  };
  return { start, end: (r: string) => end(r), fail: (e: Error) => fail(e), starts: () => starts };
}

describe("Finalizes", () => {
  it("joins a retried request to the finalize that runs, and answers a later one from its result", async () => {
    const f = new Finalizes<string>();
    const j = job();
    const first = f.answer("m1", undefined, j.start);
    const retry = f.answer("m1", undefined, j.start);
    j.end("done");
    expect(await first).toBe("done");
    expect(await retry).toBe("done");
    expect(await f.answer("m1", undefined, j.start)).toBe("done");
    expect(j.starts()).toBe(1);
  });

  it("answers pending when the finalize outlasts the request's hold, and the result when it ends", async () => {
    const f = new Finalizes<string>();
    const j = job();
    expect(await f.answer("m1", 20, j.start)).toBe("pending");
    const again = f.answer("m1", 60_000, j.start);
    j.end("done");
    expect(await again).toBe("done");
    expect(j.starts()).toBe(1);
  });

  it("starts again after a finalize that threw, and keeps migrations apart", async () => {
    const f = new Finalizes<string>();
    const a = job();
    const failed = f.answer("m1", undefined, a.start);
    a.fail(new Error("EIO"));
    await expect(failed).rejects.toThrow("EIO");
    const b = job();
    const second = f.answer("m1", undefined, b.start);
    const other = job();
    const m2 = f.answer("m2", undefined, other.start);
    b.end("m1 done");
    other.end("m2 done");
    expect([await second, await m2]).toEqual(["m1 done", "m2 done"]);
  });

  it("forgets the oldest answers beyond its bound", async () => {
    const f = new Finalizes<string>(2);
    for (const key of ["a", "b", "c"]) {
      const j = job();
      const p = f.answer(key, undefined, j.start);
      j.end(key);
      await p;
    }
    const again = job();
    const p = f.answer("a", undefined, again.start);
    again.end("a, again");
    expect(await p).toBe("a, again");
    expect(await f.answer("c", undefined, again.start)).toBe("c");
  });
});
