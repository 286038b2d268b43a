import { z } from "zod";
import {
  FileOwnership,
  Blake3Hash,
  ChunkSize,
  FailureCode,
  HostId,
  Id,
  MAX_MESSAGE_CHARS,
  MAX_NAME_CHARS,
  MAX_PATH_CHARS,
  MAX_VOLUMES,
  RejectionReason,
  Uint,
} from "./common.js";
import { VmDefinition } from "./vm.js";

const Path = z.string().max(MAX_PATH_CHARS);
const Name = z.string().max(MAX_NAME_CHARS);

/**
 * Control requests from the coordinator to a mover, over NATS request/reply on
 * dwcp.mover.<host>.rpc (queue group "movers"). Bytes never travel this way.
 */
export const ProbeSource = z.object({
  op: z.literal("probeSource"),
  version: z.literal(1),
  migrationId: Id,
  paths: z.array(Path).min(1).max(MAX_VOLUMES),
  /**
   * Ask for a data map of each volume in regions of this many bytes (the plan's chunk size):
   * the planner sizes batches by data, not by logical bytes. Optional; older coordinators omit it.
   */
  regionBytes: z.number().int().positive().optional(),
});

export const ProbeDestination = z.object({
  op: z.literal("probeDestination"),
  version: z.literal(1),
  migrationId: Id,
  dir: Path,
  names: z.array(Name).max(MAX_VOLUMES),
  /** The migration's `incremental` option: a regular file under a name is a base, not a refusal. */
  incremental: z.boolean().optional(),
});

export const FinalizeVolumes = z.object({
  op: z.literal("finalize"),
  version: z.literal(1),
  migrationId: Id,
  destDir: Path,
  verify: z.boolean(),
  /** The migration's `incremental` option: the `.part` replaces a final file that is the base. */
  incremental: z.boolean().optional(),
  /** The plan's chunk size: the unit of the chunk hashes `blake3` is built from. Absent from older coordinators. */
  chunkSizeBytes: ChunkSize.optional(),
  /**
   * How long the mover may hold the request while the finalize runs before answering
   * `{ ok: false, pending: true }`; absent (older coordinators): held until it ends.
   */
  holdMs: z.number().int().min(100).max(600_000).optional(),
  volumes: z
    .array(
      z.object({
        destName: Name,
        sizeBytes: Uint,
        /** CRC32C of the whole volume, combined from the chunk checksums in the log. */
        crc32c: z.number().int().min(0).max(0xffffffff),
        /**
         * BLAKE3-256 over the chunk hashes the source logged, in offset order (volumeHash). Absent
         * when the log has none (older movers): the destination then checks the CRC32C only.
         */
        blake3: Blake3Hash.optional(),
        ...FileOwnership,
      }),
    )
    .max(MAX_VOLUMES),
});

export const AbortVolumes = z.object({
  op: z.literal("abort"),
  version: z.literal(1),
  migrationId: Id,
  destDir: Path,
  names: z.array(Name).max(MAX_VOLUMES),
});

export const MoverRequest = z.discriminatedUnion("op", [ProbeSource, ProbeDestination, FinalizeVolumes, AbortVolumes]);
export type MoverRequest = z.infer<typeof MoverRequest>;
export type ProbeSource = z.infer<typeof ProbeSource>;
export type ProbeDestination = z.infer<typeof ProbeDestination>;
export type FinalizeVolumes = z.infer<typeof FinalizeVolumes>;
export type AbortVolumes = z.infer<typeof AbortVolumes>;

const Refusal = z.object({
  ok: z.literal(false),
  reason: z.union([RejectionReason, FailureCode]),
  message: z.string().max(MAX_MESSAGE_CHARS),
});

/**
 * Allocated bytes per region of a volume (SEEK_DATA/SEEK_HOLE), a planning hint only: holes read
 * as zeros whatever the map says. `regionBytes` may be larger than asked, to bound the map's length.
 */
export const DataMap = z.object({
  regionBytes: z.number().int().positive(),
  dataBytes: z.array(z.number().int().nonnegative()).max(8192),
});
export type DataMap = z.infer<typeof DataMap>;

export const ProbeSourceReply = z.union([
  z.object({
    ok: z.literal(true),
    volumes: z
      .array(
        z.object({
          path: Path,
          sizeBytes: Uint,
          dataMap: DataMap.optional(),
          ...FileOwnership,
        }),
      )
      .max(MAX_VOLUMES),
  }),
  Refusal,
]);
export const ProbeDestinationReply = z.union([z.object({ ok: z.literal(true), dir: Path }), Refusal]);
/** Pending: the finalize still runs (for a request with `holdMs`); ask again. */
export const FinalizePending = z.object({ ok: z.literal(false), pending: z.literal(true) });
export const FinalizeReply = z.union([
  z.object({ ok: z.literal(true), paths: z.array(Path).max(MAX_VOLUMES) }),
  FinalizePending,
  Refusal,
]);
export const AbortReply = z.union([z.object({ ok: z.literal(true) }), Refusal]);
export type ProbeSourceReply = z.infer<typeof ProbeSourceReply>;
export type ProbeDestinationReply = z.infer<typeof ProbeDestinationReply>;
export type FinalizeReply = z.infer<typeof FinalizeReply>;
export type AbortReply = z.infer<typeof AbortReply>;

/**
 * Live migration, between the two movers: the source mover asks the destination mover over NATS
 * request/reply on dwcp.mover.<destination host>.live (movers only; the coordinator's RPC
 * subject stays the coordinator's). The destination checks the request against the migration's
 * events: a live migration from `sourceHost` to itself.
 */
export const LivePrepare = z.object({
  op: z.literal("livePrepare"),
  version: z.literal(1),
  migrationId: Id,
  sourceHost: HostId,
  /** The migration's destination directory, resolved beneath a root of the destination mover. */
  destDir: Path,
  /** The source VM's definition; the destination replaces its root with destDir. */
  definition: VmDefinition,
  /** Size in bytes of each disk, by id, as the source guest sees it. */
  diskSizes: z.array(z.object({ id: Name, sizeBytes: Uint })).max(MAX_VOLUMES),
  /** The migration may switch to postcopy: the destination QEMU takes the capability too. */
  postcopy: z.boolean().optional(),
});
/** The source's migration completed and its mirror ended: the guest is to run at the destination. */
export const LiveFinish = z.object({
  op: z.literal("liveFinish"),
  version: z.literal(1),
  migrationId: Id,
  sourceHost: HostId,
});
/** Whether the destination QEMU of the migration still runs. */
export const LiveProblem = z.object({
  op: z.literal("liveProblem"),
  version: z.literal(1),
  migrationId: Id,
  sourceHost: HostId,
});
/** Quit the destination QEMU and remove its disks; safe at any phase and more than once. */
export const LiveAbort = z.object({
  op: z.literal("liveAbort"),
  version: z.literal(1),
  migrationId: Id,
  sourceHost: HostId,
});
export const LiveRequest = z.discriminatedUnion("op", [LivePrepare, LiveFinish, LiveProblem, LiveAbort]);
export type LiveRequest = z.infer<typeof LiveRequest>;
export type LivePrepare = z.infer<typeof LivePrepare>;
/** Every live request's reply; `problem` answers liveProblem (absent: the destination QEMU runs). */
export const LiveReply = z.union([
  z.object({ ok: z.literal(true), problem: z.string().max(MAX_MESSAGE_CHARS).optional() }),
  Refusal,
]);
export type LiveReply = z.infer<typeof LiveReply>;

/** Value of key <host> in the KV bucket dwcp_movers: where to reach a mover's data channel. */
export const MoverRegistration = z.object({
  version: z.literal(1),
  host: HostId,
  /** host:port of the data channel listener. */
  dataAddress: z.string().max(300),
  pid: z.number().int(),
  startedAt: z.iso.datetime({ offset: true }),
  heartbeatAt: z.iso.datetime({ offset: true }),
  /**
   * Random id of the registering process, the same in all its writes: a mover recognises its own
   * entry by it (a renewal stored though its answer was lost), never by pid and start time, which
   * another process can share (containers). Absent in entries of movers that predate it.
   */
  instance: z.uuid().optional(),
});
export type MoverRegistration = z.infer<typeof MoverRegistration>;
