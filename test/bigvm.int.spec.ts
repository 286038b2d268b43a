import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration } from "../cli/migrate.js";
import { peakRssBytes } from "../bench/lib-transfer.js";
import { compareFiles, generateDisk, generateMemory } from "../bench/support/bigvm.js";
import { eventsOf, startTestStack } from "./support/stack.js";

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const DISK = 8 * GiB;
/** 1% data (82 MiB) rather than bench:bigvm's 10%: the data path is the same, the test stays short. */
const DATA_FRACTION = 0.01;
const MEMORY = 128 * MiB;
const BATCH = 1 * GiB;
type TestStack = Awaited<ReturnType<typeof startTestStack>>;

// The small version of bench:bigvm (the seed's VM): an 8 GiB sparse disk with data extents of
// 64 KiB-64 MiB spread over it and a dense memory image with about 40% zero pages, a → b in one
// migration with 1 GiB batches. Not a timed test: it asserts that both images arrive identical,
// that the log holds one event per batch plus three, with no more batches than the planner's
// bound, and that peak RSS stays bounded (below).
describe("the seed's VM, scaled down: 8 GiB sparse disk + memory image", () => {
  let stack: TestStack;
  let dataBytes = 0;
  beforeAll(async () => {
    stack = await startTestStack();
    const dir = join(stack.root("a"), "vms/bigvm");
    mkdirSync(dir, { recursive: true });
    const disk = await generateDisk(join(dir, "disk.img"), { sizeBytes: DISK, dataFraction: DATA_FRACTION, seed: 21 });
    const mem = await generateMemory(join(dir, "mem.img"), { sizeBytes: MEMORY, zeroFraction: 0.4, seed: 21 });
    dataBytes = disk.dataBytes + mem.dataBytes;
  }, 120_000);
  afterAll(async () => {
    await stack?.cleanup();
  });

  it("arrives identical with one event per batch and bounded memory", async () => {
    const command = buildStart({
      vm: "bigvm",
      source: {
        host: "a",
        volumes: [
          { path: "vms/bigvm/disk.img", kind: "disk" },
          { path: "vms/bigvm/mem.img", kind: "memory" },
        ],
      },
      destination: { host: "b", dir: "in" },
      options: { batchSizeBytes: BATCH },
    });
    const r = await runMigration(stack.nats, command, { timeoutMs: 240_000 });
    expect(r.state).toBe("completed");
    for (const f of ["disk.img", "mem.img"])
      expect(await compareFiles(join(stack.root("a"), "vms/bigvm", f), join(stack.root("b"), "in", f))).toBeUndefined();

    const types = (await eventsOf(stack, r.migrationId)).map((e) => e.event.type);
    const batches = types.filter((t) => t === "ChunkBatchTransferred").length;
    expect(types.length).toBe(batches + 3);
    expect(types[0]).toBe("MigrationRequested");
    expect(types.at(-1)).toBe("MigrationCompleted");
    // The planner spreads a sparse volume's data over at least 4 batches, each about its share.
    expect(batches).toBeLessThanOrEqual(2 * 5 + Math.ceil(dataBytes / BATCH));

    // The target is 256 MiB for each service. The coordinator is held to it; the sending mover
    // peaked at 233-248 MiB in runs of this test at load 11-12 (BENCHMARKS.md, bench:bigvm), too
    // close to the target for a shared CI machine, so the movers are held to 320 MiB here: well
    // below the 400-800 MiB lz4-napi's asynchronous calls cost a mover (see native/compress.ts).
    const movers = await Promise.all(["a", "b"].map((h) => peakRssBytes(stack.movers.get(h)?.child.pid ?? 0)));
    expect(Math.max(...movers), `movers' peak RSS: ${movers.join(", ")}`).toBeLessThanOrEqual(320 * MiB);
    expect(await peakRssBytes(stack.coordinators[0]?.child.pid ?? 0)).toBeLessThanOrEqual(256 * MiB);
  }, 300_000);
});
