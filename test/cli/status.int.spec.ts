// `dwcp status` through the built binary against a real stack: it reads the coordinator's signed
// summary pages (one message per 256 migrations) and gives the same rows as folding every event; a summary
// the coordinator did not sign is not believed, and a stale one (the log moved on while no
// coordinator ran) is replaced by a fold of the migration's events.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MigrationSummary } from "#schemas/index.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import { messagesPerMigration, readSummaries } from "#common/summaries.js";
import { summaryOf } from "#migration";
import { cliEventTrust, listMigrations, newId, publishCommand } from "../../cli/client.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { statusRow, type StatusRow } from "../../cli/status-table.js";
import { cliOf, makeImage, startTestStack } from "../support/stack.js";

const KiB = 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;

/** `dwcp <args>` as a user runs it against the test stack. */
const dwcp = (...args: string[]) => cliOf(stack)(...args);

const trust = () => cliEventTrust(stack.opts.dataDir);

/** The rows folding every event gives (what status gave before summaries), now fixed for ended migrations. */
async function foldedRows(): Promise<StatusRow[]> {
  const all = await listMigrations(stack.nats, trust());
  return all.map((m) => statusRow(summaryOf(m, { messages: 0, lastSeq: 0 }), new Date()));
}

async function statusJson(): Promise<StatusRow[]> {
  const r = await dwcp("status", "--json");
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as StatusRow[];
}

/** Resolves once the coordinator's summary of every migration covers all of its messages. */
async function summariesCurrent(timeoutMs = 30_000): Promise<Map<string, MigrationSummary>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [summaries, counts] = await Promise.all([
      readSummaries(stack.nats, trust()),
      messagesPerMigration(stack.nats, EVT_STREAM),
    ]);
    if ([...counts].every(([id, n]) => summaries.get(id)?.messages === n)) return summaries;
    if (Date.now() > deadline) throw new Error("the coordinator's summaries did not catch up");
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  stack = await startTestStack();
  await makeImage(stack, "a", "vms/s/disk.img", { sizeBytes: 256 * KiB, zeroFraction: 0.5, seed: 3 });
  const start = (i: number, path = "vms/s/disk.img") =>
    buildStart({
      vm: `s${i}`,
      source: { host: "a", volumes: [{ path, kind: "disk" }] },
      destination: { host: "b", dir: `s/${i}` },
      options: { chunkSizeBytes: 64 * KiB, batchSizeBytes: 128 * KiB },
      migrationId: `st-${i}`,
    });
  await Promise.all([0, 1, 2, 3, 4].map((i) => runMigration(stack.nats, start(i), { timeoutMs: 60_000 })));
  await runMigration(stack.nats, start(5, "vms/none/disk.img"), { timeoutMs: 60_000 });
});
afterAll(async () => stack?.cleanup());

describe("dwcp status reads the coordinator's summaries", () => {
  it("one current, coordinator-signed summary per migration, and the same rows as folding every event", async () => {
    const summaries = await summariesCurrent();
    expect([...summaries.keys()].sort()).toEqual(["st-0", "st-1", "st-2", "st-3", "st-4", "st-5"]);
    expect(summaries.get("st-0")).toMatchObject({ state: "completed", bytes: 256 * KiB, batches: 2, batchesDone: 2 });
    expect(summaries.get("st-5")).toMatchObject({ state: "rejected", reason: "SOURCE_NOT_FOUND" });
    const rows = await statusJson();
    expect(rows).toEqual(await foldedRows());
    expect(rows.map((r) => r.state)).toEqual([...Array<string>(5).fill("completed"), "rejected"]);
  });

  it("a summary the coordinator did not sign is not believed", async () => {
    await summariesCurrent();
    // Admin may publish anywhere, but has no coordinator key: an unsigned page replaces page 0
    // (the last of each page is kept), claiming 1 PiB for st-0 and inventing a migration.
    const forged = (id: string): MigrationSummary => ({
      type: "MigrationSummary",
      version: 1,
      migrationId: id,
      state: "completed",
      bytes: 2 ** 50,
      wireBytes: 2 ** 50,
      zeroBytes: 0,
      batchesDone: 1,
      messages: 4,
      lastSeq: 1,
    });
    const page = { type: "MigrationSummaryPage", version: 1, page: 0, summaries: [forged("st-0"), forged("ghost")] };
    await stack.nats.js.publish(subjects.summaryPage(0), JSON.stringify(page), { msgID: newId("forged") });
    const rows = await statusJson();
    expect(rows.map((r) => r.migrationId)).not.toContain("ghost");
    expect(rows.find((r) => r.migrationId === "st-0")?.bytesDone).toBe(256 * KiB);
    expect(rows).toEqual(await foldedRows());
  });

  it("a stale summary is replaced by a fold of the events; a restarted coordinator brings it up to date", async () => {
    await stack.coordinators[0]?.stop();
    // A message on st-1's subject that nobody trusted signed: folded as ignored input.
    const h = natsHeaders();
    await stack.nats.js.publish(
      subjects.migration("st-1"),
      JSON.stringify({ type: "MigrationCompleted", migrationId: "st-1" }),
      { msgID: newId("junk"), headers: h },
    );
    const rows = await statusJson();
    expect(rows.find((r) => r.migrationId === "st-1")).toMatchObject({
      state: "completed",
      ignored: { count: 1 },
    });
    expect(rows).toEqual(await foldedRows());

    await stack.startCoordinator();
    const summaries = await summariesCurrent();
    expect(summaries.get("st-1")).toMatchObject({ state: "completed", ignored: { count: 1 } });
    expect(summaries.get("st-0")?.bytes).toBe(256 * KiB);
    expect(await statusJson()).toEqual(await foldedRows());
    // A command the restarted coordinator decides is summarised too.
    const seq = await publishCommand(
      stack.nats,
      buildStart({
        vm: "late",
        source: { host: "a", volumes: [{ path: "vms/s/disk.img", kind: "disk" }] },
        destination: { host: "b", dir: "s/late" },
        migrationId: "st-late",
      }),
    );
    expect(seq).toBeGreaterThan(0);
    await expect
      .poll(async () => (await readSummaries(stack.nats, trust())).get("st-late")?.state, { timeout: 60_000 })
      .toBe("completed");
  });
});
