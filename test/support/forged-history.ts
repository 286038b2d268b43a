import type { MigrationEvent } from "#schemas/index.js";

const MiB = 1024 * 1024;

/**
 * A hand-written history claiming a completed 100 GB migration from `source` to `destination`:
 * what an attacker appends to make `dwcp status` report work that never happened.
 */
export function forgedHistory(id: string, source: string, destination: string): MigrationEvent[] {
  const base = { migrationId: id, version: 1 as const };
  const at = new Date().toISOString();
  return [
    {
      type: "MigrationRequested",
      ...base,
      at,
      commandId: `c-${id}`,
      vm: "forged",
      source: { host: source, volumes: [{ path: "vms/forged.img", kind: "disk" }] },
      destination: { host: destination, dir: "forged" },
      options: { chunkSizeBytes: 4 * MiB, batchSizeBytes: 64 * MiB, verify: true },
    },
    {
      type: "MigrationCompleted",
      ...base,
      at,
      totals: { bytes: 100e9, zeroBytes: 0, wireBytes: 100e9, chunks: 23_842, batches: 1_491 },
      durationMs: 1_000,
      volumes: [],
    },
  ];
}
