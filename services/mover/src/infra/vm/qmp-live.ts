import { z } from "zod";
import type { QmpClient } from "./qmp.js";

// The QMP commands live migration sends (QEMU 7.2), each with the schema of what QEMU returns.
// Kept apart from qmp.ts's QmpCommands so other features add theirs without touching these.

const Empty = z.object({}).loose();
const Bytes = z.number().int().nonnegative();

const BlockJob = z
  .object({
    device: z.string().max(256),
    type: z.string().max(64),
    len: Bytes,
    offset: Bytes,
    ready: z.boolean().optional(),
    status: z.string().max(64).optional(),
    error: z.string().max(4096).optional(),
  })
  .loose();
export type BlockJob = z.infer<typeof BlockJob>;

const RamStats = z
  .object({
    transferred: Bytes,
    remaining: Bytes,
    total: Bytes,
    "dirty-sync-count": Bytes.optional(),
    "dirty-pages-rate": z.number().nonnegative().optional(),
    mbps: z.number().nonnegative().optional(),
  })
  .loose();

export const MigrationInfo = z
  .object({
    status: z.string().max(64).optional(),
    "total-time": z.number().nonnegative().optional(),
    downtime: z.number().nonnegative().optional(),
    "expected-downtime": z.number().nonnegative().optional(),
    "setup-time": z.number().nonnegative().optional(),
    ram: RamStats.optional(),
    /** Auto-converge's current vCPU throttle, once it throttles. */
    "cpu-throttle-percentage": z.number().int().min(0).max(100).optional(),
    "error-desc": z.string().max(4096).optional(),
  })
  .loose();
export type MigrationInfo = z.infer<typeof MigrationInfo>;

const NamedNode = z
  .object({
    "node-name": z.string().max(256),
    image: z.object({ "virtual-size": Bytes }).loose(),
  })
  .loose();

export const LiveQmp = {
  "blockdev-add": Empty,
  "blockdev-del": Empty,
  "blockdev-mirror": Empty,
  "block-job-cancel": Empty,
  "query-block-jobs": z.array(BlockJob).max(1024),
  "query-named-block-nodes": z.array(NamedNode).max(4096),
  "migrate-set-capabilities": Empty,
  "migrate-set-parameters": Empty,
  migrate: Empty,
  migrate_cancel: Empty,
  "migrate-continue": Empty,
  "migrate-start-postcopy": Empty,
  "migrate-incoming": Empty,
  "query-migrate": MigrationInfo,
  "nbd-server-start": Empty,
  "nbd-server-stop": Empty,
  "block-export-add": Empty,
} as const;
export type LiveQmpCommand = keyof typeof LiveQmp;

/** Sends a live-migration command and returns its checked result. */
export function liveQmp<C extends LiveQmpCommand>(
  qmp: QmpClient,
  command: C,
  args?: Record<string, unknown>,
): Promise<z.infer<(typeof LiveQmp)[C]>> {
  return qmp.executeAs(command, LiveQmp[command] as unknown as z.ZodType<z.infer<(typeof LiveQmp)[C]>>, args);
}

/** BLOCK_JOB_* event data. */
export const BlockJobEvent = z
  .object({
    device: z.string().max(256),
    len: Bytes.optional(),
    offset: Bytes.optional(),
    error: z.string().max(4096).optional(),
  })
  .loose();
/** MIGRATION event data. */
export const MigrationEvent = z.object({ status: z.string().max(64) }).loose();
