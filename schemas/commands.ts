import { z } from "zod";
import { VmName } from "./names.js";
import {
  BandwidthLimit,
  Destination,
  Id,
  LiveMigrationOptions,
  MigrationMode,
  MigrationOptions,
  Priority,
  Source,
  Weight,
} from "./common.js";

/**
 * Start moving a VM from one host to another. Published to dwcp.cmd.migration.start. Mode
 * "files" (the default) copies the image files `source.volumes` names (at least one); mode
 * "live" moves the running QEMU guest `vm` of the source mover (its disks, mirrored, and its
 * RAM) into `destination.dir` and names no volumes.
 */
export const StartMigration = z
  .object({
    type: z.literal("StartMigration"),
    version: z.literal(1),
    /** Unique per command; used as the JetStream msgID, so a re-publish is a no-op. */
    commandId: Id,
    /** Defaults to commandId. */
    migrationId: Id.optional(),
    vm: VmName,
    /** Absent: "files". */
    mode: MigrationMode.optional(),
    source: Source,
    destination: Destination,
    options: MigrationOptions.default(MigrationOptions.parse({})),
    /** How a live migration runs; only with mode "live". */
    live: LiveMigrationOptions.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.mode === "live") {
      if (c.source.volumes.length > 0)
        ctx.addIssue({
          code: "custom",
          path: ["source", "volumes"],
          message: "a live migration names no volumes: the VM's definition at the source lists its disks",
        });
      return;
    }
    if (c.live !== undefined)
      ctx.addIssue({ code: "custom", path: ["live"], message: 'live options need mode "live"' });
    if (c.source.volumes.length === 0)
      ctx.addIssue({
        code: "too_small",
        origin: "array",
        minimum: 1,
        inclusive: true,
        path: ["source", "volumes"],
        message: "at least one volume is required",
      });
  });
export type StartMigration = z.infer<typeof StartMigration>;

/** Stop a migration: no new work is handed out and partial files are removed. */
export const CancelMigration = z.object({
  type: z.literal("CancelMigration"),
  version: z.literal(1),
  commandId: Id,
  migrationId: Id,
  reason: z.string().max(1024).optional(),
});
export type CancelMigration = z.infer<typeof CancelMigration>;

/**
 * Change a running migration's bandwidth limit, weight or priority: its batches in flight follow
 * the new values, and later batches carry them. A field left out stays as it is; `null` removes
 * the limit. Published to dwcp.cmd.migration.set.
 */
export const SetMigrationOptions = z
  .object({
    type: z.literal("SetMigrationOptions"),
    version: z.literal(1),
    commandId: Id,
    migrationId: Id,
    bandwidthLimitBytesPerSec: BandwidthLimit.nullable().optional(),
    weight: Weight.optional(),
    priority: Priority.optional(),
  })
  .refine((c) => c.bandwidthLimitBytesPerSec !== undefined || c.weight !== undefined || c.priority !== undefined, {
    message: "SetMigrationOptions must change the bandwidth limit, the weight or the priority",
  });
export type SetMigrationOptions = z.infer<typeof SetMigrationOptions>;

export const Command = z.discriminatedUnion("type", [StartMigration, CancelMigration, SetMigrationOptions]);
export type Command = z.infer<typeof Command>;
export const COMMAND_TYPES = ["StartMigration", "CancelMigration", "SetMigrationOptions"] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];
