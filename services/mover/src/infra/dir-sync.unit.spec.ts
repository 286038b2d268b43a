import { describe, expect, it } from "vitest";
import { DirSyncs } from "./dir-sync.js";

/** A directory whose fsyncs are counted and finished by the test, in order. */
function fakeDir(log: string[], name: string): { sync(): Promise<void>; finish(err?: Error): void } {
  const waiting: Array<(err?: Error) => void> = [];
  return {
    sync: () => {
      log.push(`start ${name}`);
      return new Promise<void>((resolve, reject) => waiting.push((err) => (err ? reject(err) : resolve())));
    },
    finish: (err?: Error) => waiting.shift()?.(err),
  };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe("directory fsyncs shared by concurrent finalizes", () => {
  it("runs one fsync for everyone who asked while one was running, and only after it", async () => {
    const log: string[] = [];
    const syncs = new DirSyncs();
    const [a, b, c] = [fakeDir(log, "a"), fakeDir(log, "b"), fakeDir(log, "c")];
    const done: string[] = [];
    const pa = syncs.sync("/d", a).then(() => done.push("a"));
    const pb = syncs.sync("/d", b).then(() => done.push("b"));
    const pc = syncs.sync("/d", c).then(() => done.push("c"));
    await settle();
    // b and c asked while a's fsync ran (it may predate their renames): they wait for the next one.
    expect(log).toEqual(["start a"]);
    a.finish();
    await pa;
    await settle();
    expect(done).toEqual(["a"]);
    expect(log).toEqual(["start a", "start b"]);
    b.finish();
    await Promise.all([pb, pc]);
    expect(done.sort()).toEqual(["a", "b", "c"]);
    expect(log).toEqual(["start a", "start b"]);
  });

  it("keeps directories apart and starts afresh once idle; a failed fsync fails only its callers", async () => {
    const log: string[] = [];
    const syncs = new DirSyncs();
    const [a, b, c] = [fakeDir(log, "a"), fakeDir(log, "b"), fakeDir(log, "c")];
    const pa = syncs.sync("/d", a);
    const pb = syncs.sync("/e", b);
    await settle();
    expect(log).toEqual(["start a", "start b"]);
    const pc = syncs.sync("/d", c);
    a.finish(new Error("EIO"));
    await expect(pa).rejects.toThrow("EIO");
    await settle();
    c.finish();
    b.finish();
    await expect(pc).resolves.toBeUndefined();
    await expect(pb).resolves.toBeUndefined();
    const d = fakeDir(log, "d");
    const pd = syncs.sync("/d", d);
    await settle();
    expect(log.at(-1)).toBe("start d");
    d.finish();
    await pd;
  });
});
