import { afterAll, beforeAll, expect, it } from "vitest";
import { EventStore } from "#common/event-store.js";
import { subjects } from "#common/layout.js";
import { EventVerifier } from "#common/signing.js";
import { foldTrusted } from "../../services/coordinator/src/domain/migration/index.js";
import { cliOf, startTestStack, waitForEvent } from "../support/stack.js";

// The control plane of a live migration: a StartMigration with mode "live" becomes one work item
// to the source mover, whose outcome is recorded as its own signed event. These movers run no
// VMs, so the source mover records the failure at prepare and the migration ends failed, the
// coordinator probing nothing and planning no batches.

let stack: Awaited<ReturnType<typeof startTestStack>>;

beforeAll(async () => {
  stack = await startTestStack();
}, 120_000);

afterAll(async () => {
  await stack?.cleanup();
});

it("hands a live migration to its source mover as one work item; a mover without VMs fails it at prepare", async () => {
  const command = {
    type: "StartMigration",
    version: 1,
    commandId: "live-1",
    vm: "guest1",
    mode: "live",
    source: { host: "a", volumes: [] },
    destination: { host: "b", dir: "vms/guest1" },
    live: { downtimeLimitMs: 300 },
  };
  await stack.nats.js.publish(subjects.startMigration, JSON.stringify(command));
  const failed = await waitForEvent(stack, "live-1", (e) => e.event.type === "LiveMigrationFailed", 60_000);
  expect(failed.event).toMatchObject({
    host: "a",
    code: "LIVE_MIGRATION_FAILED",
    phase: "prepare",
    sourceRunning: true,
  });
  // Read with the stack's trust file: the failure is signed by the source host's mover.
  const verifier = EventVerifier.fromTrustFile(stack.credentials.trustFile);
  const events = await new EventStore(stack.nats.js, stack.nats.jsm, { trust: { insecure: false, verifier } }).read(
    "live-1",
  );
  expect(events.map((e) => e.provenance)).toMatchObject([
    { kind: "signed", principal: { role: "coordinator" } },
    { kind: "signed", principal: { role: "mover-a" } },
  ]);
  expect(events.map((e) => e.event.type)).toEqual(["MigrationRequested", "LiveMigrationFailed"]);
  const m = foldTrusted("live-1", events);
  expect(m).toMatchObject({ status: "failed", reason: "LIVE_MIGRATION_FAILED", live: { failedPhase: "prepare" } });
}, 90_000);

it("dwcp migrate --live --wait follows it to the mover's outcome; a --from with paths is a usage error", async () => {
  const dwcp = cliOf(stack);
  const r = await dwcp(
    "migrate",
    "--live",
    "--vm",
    "guest1",
    "--from",
    "a",
    "--to",
    "b:vms/g2",
    "--id",
    "live-2",
    "--wait",
    "--json",
  );
  expect(r.code, r.stderr).toBe(1);
  expect(JSON.parse(r.stdout)).toMatchObject({
    migrationId: "live-2",
    state: "failed",
    reason: "LIVE_MIGRATION_FAILED",
  });
  const bad = await dwcp("migrate", "--live", "--vm", "guest1", "--from", "a:x.img", "--to", "b:vms/g3");
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/--from names the source host only/);
}, 90_000);
