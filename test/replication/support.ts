import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MigrationEvent } from "#schemas/index.js";
import { Kvm } from "@nats-io/kv";
import { ensureLayout, MOVERS_BUCKET } from "#common/layout.js";
import { connectNats, type Nats } from "#common/nats.js";
import { startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import type { Role } from "#common/credentials/provision.js";
import { startSecureNats, type SecureNats } from "../support/secure-nats.js";

/** A private nats-server on a free port with a temp store, the dwcp layout, and a connection. */
export interface TestNats {
  dir: string;
  server: NatsServerHandle;
  /** The test's own connection (admin on a secure server). */
  nats: Nats;
  /** Set with `secure`: the server's users and credentials, as `dwcp up` has them. */
  secure?: SecureNats;
  stop(): Promise<void>;
}

/**
 * `secure`: the server requires each role's nkey and a client certificate, as `dwcp up`'s does;
 * the test connects as admin. Default: an anonymous server.
 */
export async function startTestNats(layout = true, o: { secure?: boolean } = {}): Promise<TestNats> {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-repl-"));
  const secure = o.secure === true ? await startSecureNats(dir) : undefined;
  const server = secure?.server ?? (await startNatsServer({ storeDir: join(dir, "nats") }));
  const nats = secure ? await secure.connect("admin" satisfies Role) : await connectNats(server.url, "dwcp-repl-test");
  if (layout) await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
  return {
    dir,
    server,
    nats,
    ...(secure ? { secure } : {}),
    async stop() {
      await nats.nc.close().catch(() => undefined);
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Registers `hosts` in the mover registry, as their movers would: commands may then name them. */
export async function registerHosts(t: TestNats, hosts: string[]): Promise<void> {
  const kv = await new Kvm(t.nats.nc).open(MOVERS_BUCKET);
  for (const host of hosts) {
    const now = new Date().toISOString();
    const entry = { version: 1, host, dataAddress: "127.0.0.1:1", pid: process.pid, startedAt: now, heartbeatAt: now };
    await kv.put(host, JSON.stringify(entry));
  }
}

const at = (): string => new Date().toISOString();

export const requested = (id: string, vm: string): MigrationEvent => ({
  type: "MigrationRequested",
  version: 1,
  migrationId: id,
  at: at(),
  commandId: `c-${id}`,
  vm,
  source: { host: "a", volumes: [{ path: "vms/d.img", kind: "disk" }] },
  destination: { host: "b", dir: `in/${id}` },
  options: { chunkSizeBytes: 1 << 20, batchSizeBytes: 1 << 26, verify: true },
});

export const planned = (id: string): MigrationEvent => ({
  type: "MigrationPlanned",
  version: 1,
  migrationId: id,
  at: at(),
  destDir: `/b/in/${id}`,
  chunkSizeBytes: 1 << 20,
  chunksPerBatch: 1,
  volumes: [
    {
      index: 0,
      kind: "disk",
      sourcePath: "/a/vms/d.img",
      destName: "d.img",
      sizeBytes: 2 << 20,
      chunkCount: 2,
      firstBatch: 0,
      batchCount: 2,
    },
  ],
  totalBytes: 2 << 20,
  chunkCount: 2,
  batchCount: 2,
});

export const transferred = (id: string, batch: number): MigrationEvent => ({
  type: "ChunkBatchTransferred",
  version: 1,
  migrationId: id,
  at: at(),
  batch,
  attempt: 0,
  host: "a",
  chunks: [{ offset: batch << 20, length: 1 << 20, crc32c: 7, zero: false, wireBytes: 1 << 20 }],
  bytes: 1 << 20,
  wireBytes: 1 << 20,
  durationMs: 1,
});

export const completed = (id: string): MigrationEvent => ({
  type: "MigrationCompleted",
  version: 1,
  migrationId: id,
  at: at(),
  totals: { bytes: 2 << 20, zeroBytes: 0, wireBytes: 2 << 20, chunks: 2, batches: 2 },
  durationMs: 3,
  volumes: [{ index: 0, destPath: `/b/in/${id}/d.img`, sizeBytes: 2 << 20, crc32c: 9 }],
});

/** Returns a time strictly after every message already acknowledged, and lets the clock pass it. */
export async function markTime(): Promise<Date> {
  const t = Date.now();
  // The server stamps in nanoseconds; the bound is compared in whole milliseconds, so the next
  // append must land at least one millisecond after t. This waits for the clock, not for a state.
  while (Date.now() <= t + 1) await new Promise((r) => setImmediate(r));
  return new Date(t);
}
