import { open } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect } from "vitest";
import { Chaos } from "./support/harness.js";
import { MiB, slowMigration, verifyMigration, waitEnd, waitEvent } from "./support/migrations.js";
import { scenario } from "./support/scenario.js";
import { rng, runSeed } from "./support/seed.js";

// Movers killed (-9) and paused (SIGSTOP past the ack wait) mid-batch. 16 MiB images in 1 MiB
// chunks and 4 MiB batches, sent at 4 MiB/s so that every fault lands inside a batch. The images
// have no holes: the planner sizes the batches of a sparse volume by its data, and the offsets
// below assume the uniform 4 chunks per batch it keeps for dense ones.
const F = import.meta.filename;
const CHUNKS_PER_BATCH = 4;
let c: Chaos;
let sourceMover = "a1";

beforeAll(async () => {
  c = await Chaos.start("movers", rng(runSeed()));
  await Promise.all([c.startCoordinator("c0"), c.startMover("a1", "a", { concurrency: 1 }), c.startMover("b1", "b")]);
});
afterAll(async () => c?.stop());

const chunkOffset = (batch: number, chunk: number): number => (batch * CHUNKS_PER_BATCH + chunk) * MiB;

describe("movers", () => {
  scenario(F, "kill -9 the source mover mid-batch", async ({ rng, seed, figures }) => {
    const m = await slowMigration(c, "srckill", seed, { dense: true });
    const [batch, chunk] = [rng.between(0, 2), rng.between(1, 3)];
    const hit = await c.dataProxy.waitFrame(
      `chunk ${chunk} of batch ${batch}`,
      (f) => f.migration === m.id && f.dir === "up" && f.kind === "CHUNK" && f.offset === chunkOffset(batch, chunk),
    );
    const killedAt = performance.now();
    await c.signal(sourceMover, "SIGKILL");
    sourceMover = "a2";
    await c.startMover(sourceMover, "a", { concurrency: 1, standby: true });
    const again = await c.dataProxy.waitFrame(
      `batch ${batch} begun again`,
      (f) =>
        f.migration === m.id && f.dir === "up" && f.kind === "BATCH_BEGIN" && f.batch === batch && f.conn > hit.conn,
    );
    figures["rtoMs"] = again.at - killedAt;
    await waitEnd(c.observer, m.id);
    const out = await verifyMigration(c, m.id, [m]);
    const oks = c.dataProxy.frames.filter(
      (f) =>
        f.migration === m.id && f.dir === "down" && f.kind === "BATCH_OK" && f.batch === batch && f.conn >= hit.conn,
    );
    expect(oks, "the killed batch completed exactly once, by the new mover").toHaveLength(1);
    expect(oks[0]?.conn).toBe(again.conn);
    Object.assign(figures, { batch, extraTransfers: out.extraTransfers, retries: out.retries });
  });

  scenario(F, "kill -9 the destination mover mid-write", async ({ rng, seed, figures }) => {
    const m = await slowMigration(c, "dstkill", seed, { dense: true });
    const [batch, chunk] = [rng.between(0, 2), rng.between(1, 3)];
    const hit = await c.dataProxy.waitFrame(
      `chunk ${chunk} of batch ${batch}`,
      (f) => f.migration === m.id && f.dir === "up" && f.kind === "CHUNK" && f.offset === chunkOffset(batch, chunk),
    );
    const killedAt = performance.now();
    await c.signal("b1", "SIGKILL");
    await c.startMover("b2", "b", { standby: true });
    const ok = await c.dataProxy.waitFrame(
      `batch ${batch} completed`,
      (f) =>
        f.migration === m.id && f.dir === "down" && f.kind === "BATCH_OK" && f.batch === batch && f.conn > hit.conn,
    );
    figures["rtoMs"] = ok.at - killedAt;
    await waitEnd(c.observer, m.id);
    const out = await verifyMigration(c, m.id, [m]);
    const failures = out.events.flatMap((e) =>
      e.event.type === "ChunkBatchFailed" && e.event.batch === batch ? [e.event.code] : [],
    );
    // The sender either reconnects to the new destination mover within its resume window (which
    // has no record of the run, so the run is sent whole on the same attempt) or the batch fails
    // and is retried: the BATCH_OK on a later connection above is what matters, and any failure
    // recorded is the unreachable destination.
    expect(failures.every((code) => code === "DESTINATION_UNREACHABLE")).toBe(true);
    Object.assign(figures, { batch, failures: failures.length, retries: out.retries });
  });

  scenario(
    F,
    "SIGSTOP the source mover past its ack wait: another mover takes the batch, the stale one is fenced",
    async ({ rng, seed, figures }) => {
      const m = await slowMigration(c, "sigstop", seed, { dense: true });
      const batch = rng.between(0, 2);
      const stale = sourceMover;
      const hit = await c.dataProxy.waitFrame(
        `chunk of batch ${batch}`,
        (f) => f.migration === m.id && f.dir === "up" && f.kind === "CHUNK" && f.offset === chunkOffset(batch, 1),
      );
      const stoppedAt = performance.now();
      await c.signal(stale, "SIGSTOP");
      try {
        sourceMover = "a3";
        await c.startMover(sourceMover, "a", { concurrency: 1, standby: true });
        const taken = await c.dataProxy.waitFrame(
          `batch ${batch} taken over`,
          (f) =>
            f.migration === m.id &&
            f.dir === "up" &&
            f.kind === "BATCH_BEGIN" &&
            f.batch === batch &&
            f.conn > hit.conn,
        );
        figures["takeoverMs"] = taken.at - stoppedAt;
        const fenced = await c.dataProxy.waitFrame(
          "the stale session fenced",
          (f) => f.migration === m.id && f.dir === "down" && f.kind === "BATCH_ERR" && f.conn === hit.conn,
        );
        expect(fenced.code).toBe("FENCED");
        await waitEvent(
          c.observer,
          m.id,
          `batch ${batch} transferred`,
          (e) => e.type === "ChunkBatchTransferred" && e.batch === batch,
        );
        // Make anything the stale writer still sends differ from the truth: if fencing let one byte
        // of it through, the destination would no longer match the (restored) source.
        const original = await overwrite(m.src, batch * CHUNKS_PER_BATCH * MiB, CHUNKS_PER_BATCH * MiB);
        await c.signal(stale, "SIGCONT");
        // The stale mover learns it lost the batch either from the fence (FENCED) or, if the
        // migration ended meanwhile, from the terminal event; either way it must not write.
        await untilLog(c, stale, /FENCED|migration ended while its batch was moving/, 30_000);
        await original.restore();
      } finally {
        await c.signal(stale, "SIGCONT");
      }
      await waitEnd(c.observer, m.id);
      const out = await verifyMigration(c, m.id, [m]);
      // The stale session's connection is a kept link: batches it finished before `hit` count not.
      const staleOks = c.dataProxy.frames.filter(
        (f) =>
          f.migration === m.id && f.dir === "down" && f.kind === "BATCH_OK" && f.conn === hit.conn && f.at > hit.at,
      );
      expect(staleOks, "the stale session never completed its batch").toHaveLength(0);
      const refused = c.dataProxy.frames.filter(
        (f) => f.migration === m.id && f.dir === "down" && f.code === "FENCED",
      ).length;
      Object.assign(figures, {
        batch,
        extraTransfers: out.extraTransfers,
        fencedSessions: refused,
        staleLearnedBy: c.logLines(stale, /FENCED/).length > 0 ? "FENCED" : "terminal event",
        // Whether the pause outlasted the host lease (a3 took it) and the stale one found out on resuming.
        staleLostLease: c.logLines(stale, /lost the host lease/).length > 0,
      });
    },
  );
});

/** Fills [offset, offset+length) of a file with 0xA5 and returns how to put the original back. */
async function overwrite(path: string, offset: number, length: number): Promise<{ restore(): Promise<void> }> {
  const fh = await open(path, "r+");
  const saved = Buffer.alloc(length);
  await fh.read(saved, 0, length, offset);
  await fh.write(Buffer.alloc(length, 0xa5), 0, length, offset);
  await fh.close();
  return {
    restore: async () => {
      const w = await open(path, "r+");
      await w.write(saved, 0, length, offset);
      await w.close();
    },
  };
}

/** A resumed process reports what happened to it only in its log: poll the file (100 ms). */
async function untilLog(chaos: Chaos, name: string, match: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (chaos.logLines(name, match).length === 0) {
    if (Date.now() > deadline) throw new Error(`${name} never logged ${String(match)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
