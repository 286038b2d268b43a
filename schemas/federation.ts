import { z } from "zod";
import { HostId, Id, Timestamp } from "./common.js";

// Federation events. A site writes only its own log (stream FED_<site>, subject
// dwcp.fed.<site>.events); every other site reads a mirrored copy. `site` is the writer and `seq`
// its position in the writer's log (1, 2, 3, ... with no gaps), so a fold can drop a copy it has
// already applied and notice one it never got. One message holds one append (FederationAppend):
// a JSON array of consecutive events of one site.

/** Site ids double as JetStream domains and stream-name suffixes. */
export const SiteId = z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, "site ids are 1-32 characters of A-Z a-z 0-9 _ -");

const Uint = z.number().int().nonnegative();

/** One resource: how much a site has and how much of it is not yet promised to VMs. */
export const Resource = z
  .object({ total: Uint, free: Uint })
  .refine((r) => r.free <= r.total, { message: "free must not exceed total" });

export const Capacity = z.object({
  vcpus: Resource,
  memoryBytes: Resource,
  diskBytes: Resource,
});

export const SiteHealth = z.enum(["healthy", "degraded", "unhealthy"]);

/** What a VM needs; optional, for placement decisions made elsewhere. */
export const VmSpec = z.object({
  vcpus: Uint,
  memoryBytes: Uint,
  diskBytes: Uint,
});

const base = {
  version: z.literal(1),
  site: SiteId,
  /** Position in the writing site's log, from 1, without gaps. */
  seq: z.number().int().positive(),
  /** Writer's clock; orders placements across sites (see services/federation/README.md). */
  at: Timestamp,
};

/**
 * Encodings of a log message, besides plain JSON, that the announcing site reads. A writer
 * uses one only once every peer has announced it; names this version does not know are kept
 * and ignored.
 */
export const AppendEncodings = z.array(z.string().min(1).max(32)).max(8);

export const SiteJoined = z.object({
  type: z.literal("SiteJoined"),
  ...base,
  health: SiteHealth,
  capacity: Capacity,
  /** How often the site promises a SiteHealthReported; 0: no periodic reports. */
  reportIntervalMs: Uint,
  appendEncodings: AppendEncodings.optional(),
  /** Client URL of the site's nats-server, for operators. */
  endpoint: z.string().max(512).optional(),
  region: z.string().max(64).optional(),
});

export const SiteLeft = z.object({
  type: z.literal("SiteLeft"),
  ...base,
  reason: z.string().max(512),
});

export const SiteHealthReported = z.object({
  type: z.literal("SiteHealthReported"),
  ...base,
  health: SiteHealth,
  capacity: Capacity,
  reportIntervalMs: Uint,
  appendEncodings: AppendEncodings.optional(),
});

const Labels = z
  .record(z.string().max(64), z.string().max(256))
  .refine((l) => Object.keys(l).length <= 32, { message: "at most 32 labels" });

export const VmPlaced = z.object({
  type: z.literal("VmPlaced"),
  ...base,
  vm: Id,
  host: HostId.optional(),
  spec: VmSpec.optional(),
  labels: Labels.optional(),
});

/**
 * A VM now runs at `to`; written by the source or the destination site of the move. It repeats
 * the VM's spec and labels so that the record it produces depends on this event alone.
 */
export const VmMoved = z.object({
  type: z.literal("VmMoved"),
  ...base,
  vm: Id,
  from: SiteId,
  to: SiteId,
  host: HostId.optional(),
  spec: VmSpec.optional(),
  labels: Labels.optional(),
  migrationId: Id.optional(),
});

export const VmRemoved = z.object({
  type: z.literal("VmRemoved"),
  ...base,
  vm: Id,
});

/**
 * Command (not stored): record in the federation that migration `migrationId` moved `vm`'s images
 * to a host of site `to`, as of `completedAt` (its MigrationCompleted). Issued by the site whose
 * coordinators own the migration (the source site); decides a VmMoved whose claim time is
 * `completedAt`, so replaying the command later changes nothing and a later move still wins.
 */
export const RecordVmMigration = z.object({
  type: z.literal("RecordVmMigration"),
  version: z.literal(1),
  vm: Id,
  migrationId: Id,
  to: SiteId,
  host: HostId.optional(),
  completedAt: Timestamp,
});

export const FederationEvent = z.discriminatedUnion("type", [
  SiteJoined,
  SiteLeft,
  SiteHealthReported,
  VmPlaced,
  VmMoved,
  VmRemoved,
]);

/** One message of a site's log: 1..n events of one site with consecutive seq. */
export const FederationAppend = z
  .array(FederationEvent)
  .min(1)
  .max(10_000)
  .refine((es) => es.every((e, i) => e.site === es[0]?.site && e.seq === (es[0]?.seq ?? 0) + i), {
    message: "an append holds consecutive events of one site",
  });

export type SiteId = z.infer<typeof SiteId>;
export type Resource = z.infer<typeof Resource>;
export type Capacity = z.infer<typeof Capacity>;
export type SiteHealth = z.infer<typeof SiteHealth>;
export type VmSpec = z.infer<typeof VmSpec>;
export type SiteJoined = z.infer<typeof SiteJoined>;
export type SiteLeft = z.infer<typeof SiteLeft>;
export type SiteHealthReported = z.infer<typeof SiteHealthReported>;
export type VmPlaced = z.infer<typeof VmPlaced>;
export type VmMoved = z.infer<typeof VmMoved>;
export type VmRemoved = z.infer<typeof VmRemoved>;
export type FederationEvent = z.infer<typeof FederationEvent>;
export type FederationAppend = z.infer<typeof FederationAppend>;
export type RecordVmMigration = z.infer<typeof RecordVmMigration>;
