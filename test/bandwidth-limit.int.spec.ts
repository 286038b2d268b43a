import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { mkdir } from "node:fs/promises";
import { generateRandomFile } from "../cli/image.js";
import { buildStart, runMigration } from "../cli/migrate.js";
import { startTestStack } from "./support/stack.js";

// A migration's bandwidth limit on the embedded stack caps the bytes on the wire: the whole
// migration (every batch, every link the source mover opens to the destination, sealed or in
// Node's TLS or plaintext) stays within it, and paced links do not stall the destination.
const MiB = 1024 * 1024;
const LIMIT = 8 * MiB;
const SIZE = 32 * MiB;

type TestStack = Awaited<ReturnType<typeof startTestStack>>;

async function limitedMigration(
  stack: TestStack,
  id: string,
  options: { batchSizeBytes: number; chunkSizeBytes: number; streams?: number },
): Promise<{ seconds: number; wireBytes: number }> {
  const rel = `vms/${id}/disk.img`;
  const src = join(stack.root("a"), rel);
  await mkdir(join(stack.root("a"), "vms", id), { recursive: true });
  await generateRandomFile(src, SIZE, 11);
  const command = buildStart({
    vm: id,
    migrationId: id,
    source: { host: "a", volumes: [{ path: rel, kind: "disk" }] },
    destination: { host: "b", dir: `in/${id}` },
    // Compression on (auto picks a codec below 200 MB/s): the random bytes must cross the wire whole.
    options: { ...options, verify: false, bandwidthLimitBytesPerSec: LIMIT },
  });
  const result = await runMigration(stack.nats, command, { timeoutMs: 120_000 });
  expect(result.state, result.message).toBe("completed");
  expect(result.bytes).toBe(SIZE);
  return { seconds: result.seconds, wireBytes: result.wireBytes };
}

/** The limit holds: 32 MiB of random data at 8 MiB/s takes >= 3 s, and the rate stays within 10% of it. */
function expectPaced(r: { seconds: number; wireBytes: number }): void {
  expect(r.wireBytes).toBeGreaterThanOrEqual(SIZE);
  expect(r.seconds).toBeGreaterThanOrEqual(3);
  expect(r.wireBytes / r.seconds).toBeLessThanOrEqual(LIMIT * 1.1);
}

describe.each([
  { link: "TLS", env: {} },
  { link: "plaintext", env: { DWCP_DATA_PLAINTEXT: "on" } },
])("a migration's bandwidth limit over $link", ({ env }) => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ env });
  });
  afterAll(async () => stack?.cleanup());

  it("holds for one batch", async () => {
    expectPaced(await limitedMigration(stack, "one", { batchSizeBytes: SIZE, chunkSizeBytes: 4 * MiB }));
  });

  it("is the total rate of several concurrent batches on kept links", async () => {
    expectPaced(await limitedMigration(stack, "many", { batchSizeBytes: 4 * MiB, chunkSizeBytes: MiB }));
  });

  it("is the total rate of a batch striped over several connections", async () => {
    expectPaced(await limitedMigration(stack, "striped", { batchSizeBytes: SIZE, chunkSizeBytes: MiB, streams: 4 }));
  });
});
