import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect } from "vitest";
import { fold } from "../../services/coordinator/src/domain/migration/evolve.js";
import { Chaos } from "./support/harness.js";
import { eventsOf, makeImage, MiB, startMigration, verifyMigration, waitEnd, waitEvent } from "./support/migrations.js";
import { trackMount } from "./support/procs.js";
import { scenario } from "./support/scenario.js";
import { rng, runSeed } from "./support/seed.js";

// Host b's root is a 24 MiB tmpfs, 14 MiB of it taken by a filler file: a 16 MiB incompressible
// image cannot fit until the filler is removed.
const F = import.meta.filename;
let c: Chaos;
let mountError: string | undefined;

beforeAll(async () => {
  c = await Chaos.start("diskfull", rng(runSeed()));
  const root = c.root("b");
  mkdirSync(root, { recursive: true });
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", root], { stdio: "pipe" });
    trackMount(root);
    c.beforeRemove.push(() => execFileSync("umount", ["-l", root], { stdio: "ignore" }));
  } catch (err) {
    mountError =
      `cannot mount a 24 MiB tmpfs at ${root} (needs root or CAP_SYS_ADMIN): ` +
      `${(err as Error).message.split("\n")[0] ?? ""}`;
  }
  await Promise.all([c.startCoordinator("c0"), c.startMover("a1", "a"), c.startMover("b1", "b")]);
});
afterAll(async () => c?.stop());

describe("destination disk full", () => {
  scenario(
    F,
    "destination disk full: NO_SPACE, nothing marked complete, resumes and completes once space is freed",
    async ({ seed, figures, skip }) => {
      if (mountError !== undefined) skip(mountError);
      const filler = join(c.root("b"), "filler.bin");
      writeFileSync(filler, Buffer.alloc(14 * MiB, 0x5a));
      const id = `diskfull-${seed}`;
      const rel = `vms/${id}/disk.img`;
      const src = await makeImage(c, "a", rel, { sizeBytes: 16 * MiB, dense: true, seed });
      await startMigration(c.cli, {
        id,
        sources: [rel],
        dir: id,
        batchSizeBytes: 4 * MiB,
        bandwidthLimitBytesPerSec: 16 * MiB,
      });

      const failed = await waitEvent(
        c.observer,
        id,
        "a NO_SPACE failure",
        (e) => e.type === "ChunkBatchFailed" && e.code === "NO_SPACE",
      );
      if (failed.event.type !== "ChunkBatchFailed") throw new Error("unreachable");
      expect(failed.event.retryable, "NO_SPACE is retryable").toBe(true);
      const before = fold(
        id,
        (await eventsOf(c.observer, id)).map((e) => e.event),
      );
      expect(before.status, "nothing is complete while the disk is full").not.toBe("completed");
      expect(before.batches[failed.event.batch]?.status).not.toBe("done");
      const doneBeforeFree = new Set(before.batches.flatMap((b, i) => (b.status === "done" ? [i] : [])));

      await rm(filler);
      const freedAt = performance.now();
      await waitEnd(c.observer, id);
      figures["completedAfterFreeMs"] = performance.now() - freedAt;
      const m = { src, dst: join(c.root("b"), id, "disk.img") };
      const out = await verifyMigration(c, id, [m]);
      const noSpace = out.events.filter(
        (e) => e.event.type === "ChunkBatchFailed" && e.event.code === "NO_SPACE",
      ).length;
      // Resumed, not restarted: batches that were done before the space was freed were not sent again.
      const resent = c.dataProxy.frames.filter(
        (f) =>
          f.migration === id &&
          f.dir === "up" &&
          f.kind === "BATCH_BEGIN" &&
          f.at > freedAt &&
          doneBeforeFree.has(f.batch),
      );
      expect(resent, "batches finished before the disk filled up were not moved again").toEqual([]);
      Object.assign(figures, {
        noSpaceFailures: noSpace,
        batchesDoneBeforeFree: doneBeforeFree.size,
        retries: out.retries,
      });
    },
  );
});
