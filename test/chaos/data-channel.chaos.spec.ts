import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect } from "vitest";
import { Chaos } from "./support/harness.js";
import {
  makeImage,
  MiB,
  slowMigration,
  startMigration,
  verifyMigration,
  waitEnd,
  waitEvent,
} from "./support/migrations.js";
import { scenario } from "./support/scenario.js";
import { rng, runSeed } from "./support/seed.js";

// Faults on the data channel between movers a and b, injected by the proxy in front of b:
// a cut, latency with a bandwidth cap, and bit flips in chunk data.
const F = import.meta.filename;
let c: Chaos;

beforeAll(async () => {
  c = await Chaos.start("datachannel", rng(runSeed()));
  await Promise.all([c.startCoordinator("c0"), c.startMover("a1", "a"), c.startMover("b1", "b")]);
});
afterEach(() => c?.dataProxy.reset());
afterAll(async () => c?.stop());

async function denseMigration(
  name: string,
  seed: number,
  o: { sizeBytes: number; chunk: number; batch: number; rate?: number },
): Promise<{ id: string; src: string; dst: string }> {
  const id = `${name}-${seed}`;
  const rel = `vms/${id}/disk.img`;
  const src = await makeImage(c, "a", rel, { sizeBytes: o.sizeBytes, dense: true, seed });
  await startMigration(c.cli, {
    id,
    sources: [rel],
    dir: id,
    chunkSizeBytes: o.chunk,
    batchSizeBytes: o.batch,
    bandwidthLimitBytesPerSec: o.rate,
  });
  return { id, src, dst: join(c.root("b"), id, "disk.img") };
}

describe("data channel faults", () => {
  scenario(F, "data channel cut for 10 s: retried until it heals, then completes", async ({ rng, seed, figures }) => {
    const m = await slowMigration(c, "cut", seed, { rate: 8 * MiB });
    // Batches are sized by data, so a sparse image may have only two: cut during one that exists.
    const planned = (await waitEvent(c.observer, m.id, "the plan", (e) => e.type === "MigrationPlanned")).event;
    if (planned.type !== "MigrationPlanned") throw new Error(`expected MigrationPlanned, got ${planned.type}`);
    const batch = rng.between(0, Math.min(2, planned.batchCount - 1));
    await c.dataProxy.waitFrame(
      `a chunk of batch ${batch}`,
      (f) => f.migration === m.id && f.dir === "up" && f.kind === "CHUNK" && f.batch === batch,
    );
    c.dataProxy.cut();
    // The fault's duration, not a synchronisation: the link stays down for 10 s.
    await sleep(10_000);
    c.dataProxy.heal();
    const healedAt = performance.now();
    const ok = await c.dataProxy.waitFrame(
      "a batch completed after healing",
      (f) => f.migration === m.id && f.kind === "BATCH_OK" && f.at > healedAt,
    );
    figures["recoveryAfterHealMs"] = ok.at - healedAt;
    await waitEnd(c.observer, m.id);
    const out = await verifyMigration(c, m.id, [m]);
    const codes = out.events.flatMap((e) => (e.event.type === "ChunkBatchFailed" ? [e.event.code] : []));
    expect(codes.length, "the cut was seen as batch failures").toBeGreaterThan(0);
    expect(new Set(codes)).toEqual(new Set(["DESTINATION_UNREACHABLE"]));
    Object.assign(figures, { failures: codes.length, retries: out.retries });
  });

  scenario(
    F,
    "50 ms latency and a capped link: the measured rate stays within 5% of bandwidthLimitBytesPerSec",
    async ({ seed, figures }) => {
      const limit = 4 * MiB;
      Object.assign(c.dataProxy.faults, { latencyMs: 50, rateBytesPerSec: 12 * MiB });
      // 24 MiB of incompressible data, 256 KiB chunks, three 8 MiB batches moved two at a time:
      // the limit is per migration and sending mover, shared by its concurrent batches.
      const m = await denseMigration("rate", seed, {
        sizeBytes: 24 * MiB,
        chunk: 256 * 1024,
        batch: 8 * MiB,
        rate: limit,
      });
      await waitEnd(c.observer, m.id);
      await verifyMigration(c, m.id, [m]);
      const chunks = c.dataProxy.frames.filter((f) => f.migration === m.id && f.dir === "up" && f.kind === "CHUNK");
      const first = chunks[0];
      const last = chunks.at(-1);
      if (!first || !last) throw new Error("no chunks seen");
      // Bytes that went out between the first chunk's header and the last one's, over that time.
      const bytes = chunks.slice(0, -1).reduce((n, f) => n + f.wire, 0);
      const rate = bytes / ((last.at - first.at) / 1000);
      Object.assign(figures, {
        limitMiBps: limit / MiB,
        measuredMiBps: rate / MiB,
        deviationPct: (100 * (rate - limit)) / limit,
        concurrentBatches: new Set(chunks.map((f) => f.conn)).size,
      });
      expect(
        Math.abs(rate - limit) / limit,
        `measured ${(rate / MiB).toFixed(3)} MiB/s against a ${limit / MiB} MiB/s limit`,
      ).toBeLessThanOrEqual(0.05);
    },
  );

  scenario(
    F,
    "bit flips in transit are detected by CRC32C, resent, counted; the image is byte-identical",
    async ({ seed, figures }) => {
      Object.assign(c.dataProxy.faults, { flipNext: 2, flipProbability: 0.15 });
      const m = await denseMigration("flip", seed, { sizeBytes: 16 * MiB, chunk: MiB, batch: 4 * MiB });
      await waitEnd(c.observer, m.id);
      const out = await verifyMigration(c, m.id, [m]);
      const flips = c.dataProxy.flips.filter((f) => f.migration === m.id);
      expect(flips.length).toBeGreaterThanOrEqual(2);
      const transferred = new Map<string, { wireBytes: number; length: number }>();
      const batchFailures = new Set<number>();
      for (const { event: e } of out.events) {
        if (e.type === "ChunkBatchTransferred")
          for (const ch of e.chunks) transferred.set(`${e.batch}:${ch.offset}`, ch);
        if (e.type === "ChunkBatchFailed" && e.code === "CHECKSUM_MISMATCH") batchFailures.add(e.batch);
      }
      let resent = 0;
      for (const f of flips) {
        const ch = transferred.get(`${f.batch}:${f.offset}`);
        // Resent within the batch (its wireBytes count every send), or the batch failed with
        // CHECKSUM_MISMATCH after too many corrupted resends and was retried as a whole.
        const wasResent = ch !== undefined && ch.wireBytes >= 2 * ch.length;
        if (wasResent) resent++;
        expect(wasResent || batchFailures.has(f.batch), `flip in batch ${f.batch} at ${f.offset} was caught`).toBe(
          true,
        );
      }
      const detected = c.logLines("b1", /failed its CRC32C check/).filter((l) => l.includes(m.id)).length;
      expect(detected, "the destination saw every flip").toBe(flips.length);
      Object.assign(figures, {
        flips: flips.length,
        detectedByDestination: detected,
        resentChunks: resent,
        checksumBatchFailures: batchFailures.size,
        wireOverheadPct: (100 * (out.state.totals.wireBytes - out.state.totals.bytes)) / out.state.totals.bytes,
      });
    },
  );
});
