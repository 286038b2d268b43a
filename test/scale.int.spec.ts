import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fold } from "../services/coordinator/src/domain/migration/evolve.js";
import { runConcurrent, writeVolumes } from "../bench/support/concurrent-migrations.js";
import type { Nats } from "#common/nats.js";
import { eventsOf, startTestStack } from "./support/stack.js";

const N = 100;
type TestStack = Awaited<ReturnType<typeof startTestStack>>;

// The small version of bench:concurrent: N migrations started at once by a plain NATS client with
// the cli role's credentials, on a stack with signed events and mTLS. Not a timed test: the bound
// is several times what a loaded CI machine needs; what it asserts is that every one completes,
// every destination is identical, and each log holds exactly the events a one-batch migration makes.
describe(`${N} concurrent migrations`, () => {
  let stack: TestStack;
  let client: Nats;
  beforeAll(async () => {
    stack = await startTestStack();
    client = await stack.connect("cli", "scale-test");
    await writeVolumes(stack, N);
  });
  afterAll(async () => {
    await client?.nc.close();
    await stack?.cleanup();
  });

  it("all complete with identical images, four events each, and every log folds to Completed", async () => {
    const r = await runConcurrent(stack, client, { n: N, timeoutMs: 240_000 });
    expect(r.outcomes).toEqual({ MigrationCompleted: N });
    expect(r.mismatched).toBe(0);
    // Requested, Planned, ChunkBatchTransferred, Completed: nothing decided twice under the load.
    expect(r.eventsPerMigration).toBe(4);
    for (const i of [0, N >> 1, N - 1]) {
      const id = r.migrationIds[i] ?? "";
      const events = await eventsOf(stack, id);
      expect(events.map((e) => e.event.type)).toEqual([
        "MigrationRequested",
        "MigrationPlanned",
        "ChunkBatchTransferred",
        "MigrationCompleted",
      ]);
      const state = fold(
        id,
        events.map((e) => e.event),
      );
      expect(state).toMatchObject({ status: "completed", totals: { bytes: 64 * 1024, batches: 1 } });
    }
  }, 300_000);
});
