import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { StartMigration, type MigrationEvent, type TransferBatch } from "#schemas/index.js";
import { ensureLayout, ensureWorkStream, workStream } from "#common/layout.js";
import { connectNats, type Nats } from "#common/nats.js";
import { startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { decide, DEFAULT_RETRY_POLICY } from "../domain/migration/decide.js";
import { fold } from "../domain/migration/evolve.js";
import { dispatchWindow } from "../domain/migration/window.js";
import { silentLog } from "#test/support/data-channel.js";
import { Dispatcher } from "./dispatcher.js";

// The work queue holds each migration's batches in proportion to its weight (its dispatch
// window), queued in turns by weight, and a batch that ends makes room for the next: read back
// from a real work stream.
const MiB = 1024 * 1024;
const ctx = { now: new Date(), policy: DEFAULT_RETRY_POLICY };
let dir: string;
let server: NatsServerHandle;
let nats: Nats;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-dispatcher-"));
  server = await startNatsServer({ storeDir: join(dir, "nats") });
  nats = await connectNats(server.url, "dispatcher");
  await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
  await ensureWorkStream(nats.jsm, "a", { replicas: 1 });
});

afterAll(async () => {
  await nats?.nc.close().catch(() => undefined);
  if (server) await server.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** The events of a planned migration of one 80 MiB volume in 20 batches of 4 MiB, with `weight`. */
function planned(id: string, weight: number): MigrationEvent[] {
  const start = StartMigration.parse({
    type: "StartMigration",
    version: 1,
    commandId: `c-${id}`,
    migrationId: id,
    vm: id,
    source: { host: "a", volumes: [{ path: "/src/disk.img", kind: "disk" }] },
    destination: { host: "b", dir: `vms/${id}` },
    options: { chunkSizeBytes: 4 * MiB, batchSizeBytes: 4 * MiB, weight },
  });
  const requested = decide(fold(id, []), start, ctx);
  const outcome = {
    ok: true as const,
    destDir: `/dst/vms/${id}`,
    volumes: [{ kind: "disk" as const, sourcePath: "/src/disk.img", sizeBytes: 80 * MiB }],
  };
  return [...requested, ...decide(fold(id, requested), { type: "PlanMigration", outcome }, ctx)];
}

const transferred = (id: string, batch: number): MigrationEvent => ({
  type: "ChunkBatchTransferred",
  version: 1,
  migrationId: id,
  at: new Date().toISOString(),
  batch,
  attempt: 0,
  host: "a",
  chunks: [{ offset: batch * 4 * MiB, length: 4 * MiB, crc32c: 1, zero: false, wireBytes: 4 * MiB }],
  bytes: 4 * MiB,
  wireBytes: 4 * MiB,
  durationMs: 5,
});

/** The batches of each migration in the work queue, in queue order. */
async function queued(): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  const info = await nats.jsm.streams.info(workStream("a"));
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await nats.jsm.streams.getMessage(workStream("a"), { seq });
    const item = m?.json<TransferBatch>();
    if (!item) continue;
    out.set(item.migrationId, [...(out.get(item.migrationId) ?? []), item.batch]);
  }
  return out;
}

it("queues each migration's batches up to its window, in turns by weight, and more as batches end", async () => {
  const woken: string[] = [];
  const dispatcher = new Dispatcher(
    nats,
    silentLog,
    () => Promise.resolve(),
    undefined,
    (id) => woken.push(id),
  );
  const light = planned("light", 1);
  const heavy = planned("heavy", 3);
  // Alone on its host, light fills its window; heavy then takes turns with it: batches of 4 MiB,
  // at weight 3 each a third of one of light's, queued while less than one of light's past the
  // clock (0).
  await dispatcher.dispatch(fold("light", light));
  await dispatcher.dispatch(fold("heavy", heavy));
  expect(await queued()).toEqual(
    new Map([
      ["light", [0, 1, 2, 3]],
      ["heavy", [0, 1, 2]],
    ]),
  );
  expect(dispatchWindow(1, 4 * MiB)).toBe(4);
  expect(woken).toEqual([]);

  // Dispatching again without a change publishes nothing. Two of light's batches end: its window
  // has room for two, but the clock (the end of its batch 2, 12 MiB) is a whole batch short of
  // its next start (16 MiB), so it holds back, and heavy, which held back, is asked to dispatch
  // again and queues three more, from the clock on.
  await dispatcher.dispatch(fold("light", light));
  expect((await queued()).get("light")).toEqual([0, 1, 2, 3]);
  await dispatcher.dispatch(fold("light", [...light, transferred("light", 0), transferred("light", 2)]));
  expect((await queued()).get("light")).toEqual([0, 1, 2, 3]);
  expect(woken).toEqual(["heavy"]);
  await dispatcher.dispatch(fold("heavy", heavy));
  expect((await queued()).get("heavy")).toEqual([0, 1, 2, 3, 4, 5]);
});
