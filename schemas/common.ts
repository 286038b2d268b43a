import { z } from "zod";

/** Identifiers become NATS subject tokens and stream names: keep them to a safe alphabet. */
export const Id = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 characters of A-Z a-z 0-9 _ -");

export const HostId = z.string().regex(/^[A-Za-z0-9_-]{1,48}$/, "host ids are 1-48 characters of A-Z a-z 0-9 _ -");

export const Timestamp = z.iso.datetime({ offset: true });

/** A BLAKE3-256 digest (32 bytes) as unpadded base64url: 43 characters. */
export const Blake3Hash = z.string().regex(/^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/, "must be a base64url BLAKE3-256");

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const MIN_CHUNK_BYTES = 64 * KiB;
export const MAX_CHUNK_BYTES = 64 * MiB;
export const DEFAULT_CHUNK_BYTES = 4 * MiB;
export const DEFAULT_BATCH_BYTES = 64 * MiB;
/** Largest batch a migration may ask for (`batchSizeBytes`). */
export const MAX_BATCH_BYTES = 1024 * MiB;
/** Chunks in one batch: a uniform batch holds at most MAX_BATCH_BYTES / MIN_CHUNK_BYTES. */
export const MAX_CHUNKS_PER_BATCH = MAX_BATCH_BYTES / MIN_CHUNK_BYTES;
/**
 * Batches in one migration. Every batch is a slot in the coordinator's state, so a plan may not
 * ask for more (1 Mi batches of the default 64 MiB is 64 TiB); a larger image needs larger batches.
 */
export const MAX_BATCHES = 1024 * 1024;
/**
 * A batch sized by data holds at most this many times the chunks of a uniform batch: hole
 * chunks cost a frame and a log entry each, and a batch is the unit of redelivery.
 */
export const MAX_SPARSE_BATCH_FACTOR = 16;
/** Volumes in one migration. */
export const MAX_VOLUMES = 64;
/** File and directory paths, in UTF-16 code units. */
export const MAX_PATH_CHARS = 4096;
/** A file name (one path component). */
export const MAX_NAME_CHARS = 255;
/** Free text in an event (a failure or rejection message). */
export const MAX_MESSAGE_CHARS = 8192;
/**
 * Input echoed back in a rejection or failure message is cut to this many characters, so a
 * sender cannot make the log store what it sent (a 250 KiB `type` becomes a short prefix).
 */
export const MAX_ECHO_CHARS = 200;

/** `text` cut to `max` characters, marked with how much was cut. */
export function truncateText(text: string, max: number = MAX_ECHO_CHARS): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}... (${text.length - max} more characters)`;
}

/** A value echoed in a message: JSON, cut to MAX_ECHO_CHARS. */
export const echo = (value: unknown): string => {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = typeof value;
  }
  return truncateText(text);
};

/** Why a value failed validation, in one short line: zod's first issues, or the error's message. */
export function describeInvalid(err: unknown): string {
  const issues = (err as { issues?: unknown } | null)?.issues;
  if (Array.isArray(issues) && issues.length > 0) {
    const listed = (issues as Array<{ path?: PropertyKey[]; message?: string }>)
      .slice(0, 3)
      .map((i) => `${(i.path ?? []).map(String).join(".") || "(root)"}: ${i.message ?? "invalid"}`);
    return truncateText(listed.join("; "), 2 * MAX_ECHO_CHARS);
  }
  return truncateText(err instanceof Error ? err.message : String(err));
}

/** Non-negative safe integer (zod's int() already refuses anything beyond Number.MAX_SAFE_INTEGER). */
export const Uint = z.number().int().nonnegative();

/**
 * A source file's permission bits and owner, kept at the destination (the owner only when the
 * destination runs as root). Absent from older movers' probes: the destination keeps its default.
 */
export const FileOwnership = {
  /** Permission bits (st_mode & 0o7777). */
  mode: z.number().int().min(0).max(0o7777).optional(),
  uid: z.number().int().min(0).max(0xffffffff).optional(),
  gid: z.number().int().min(0).max(0xffffffff).optional(),
};

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

export const ChunkSize = z
  .number()
  .int()
  .refine((n) => isPowerOfTwo(n) && n >= MIN_CHUNK_BYTES && n <= MAX_CHUNK_BYTES, {
    message: "chunk size must be a power of two from 64 KiB (65536) to 64 MiB (67108864)",
  });

export const VolumeKind = z.enum(["disk", "memory"]);

export const SourceVolume = z.object({
  /** Path on the source host; must resolve under one of that mover's --root directories. */
  path: z.string().min(1).max(MAX_PATH_CHARS),
  kind: VolumeKind,
});

/**
 * The source host and its volumes. A file migration names at least one volume (StartMigration
 * checks it); a live migration names none: the VM's definition at the source lists its disks.
 */
export const Source = z.object({
  host: HostId,
  volumes: z.array(SourceVolume).max(MAX_VOLUMES),
});

/** What a migration moves: image files (the default), or a running QEMU guest with its disks and RAM. */
export const MigrationMode = z.enum(["files", "live"]);
export type MigrationMode = z.infer<typeof MigrationMode>;

export const Destination = z.object({
  host: HostId,
  /** Directory on the destination host, absolute or relative to its first root; created if missing. */
  dir: z.string().min(1).max(MAX_PATH_CHARS),
});

/**
 * How the data channel compresses chunks: `auto` picks none, LZ4 or a zstd level from the link's
 * rate and the spare CPU; the others force a codec (each chunk is still sent as is where the
 * codec does not shrink it by 10%).
 */
export const CompressionMode = z.enum(["auto", "none", "lz4", "zstd"]);
export type CompressionMode = z.infer<typeof CompressionMode>;

/** Most data-channel connections one batch may be striped over. */
export const MAX_DATA_STREAMS = 16;

/** Cap on data-channel bytes per second for a migration, per sending mover (a safe integer). */
export const BandwidthLimit = z.number().int().positive();

/**
 * A migration's share of a link it shares with others of equal priority (same source mover to
 * the same destination mover): active migrations get the link's rate in proportion to their
 * weights. 1..1000; default 1.
 */
export const MAX_WEIGHT = 1000;
export const Weight = z.number().int().min(1).max(MAX_WEIGHT);
/** Which migrations on a shared link send first: the highest priority with data to send. -100..100; default 0. */
export const Priority = z.number().int().min(-100).max(100);

export const MigrationOptions = z.object({
  /** Bytes per chunk: a power of two from 64 KiB to 64 MiB. Default 4 MiB. */
  chunkSizeBytes: ChunkSize.default(DEFAULT_CHUNK_BYTES),
  /** Approximate bytes per batch (one work item); rounded to whole chunks. Default 64 MiB. */
  batchSizeBytes: z.number().int().min(MIN_CHUNK_BYTES).max(MAX_BATCH_BYTES).default(DEFAULT_BATCH_BYTES),
  /** Re-read and check every volume at the destination before the final rename. Default true. */
  verify: z.boolean().default(true),
  /** Cap on data-channel bytes per second for this migration, per sending mover. */
  bandwidthLimitBytesPerSec: BandwidthLimit.optional(),
  /**
   * TCP connections each batch is striped over to the destination (1..16). Default: 4 on a link
   * whose round trip is 2 ms or more and whose congestion control backs off on loss (CUBIC,
   * Reno), 1 where the link runs BBR or is local.
   */
  streams: z.number().int().min(1).max(MAX_DATA_STREAMS).optional(),
  /** Chunk compression on the data channel. Default auto. */
  compression: CompressionMode.optional(),
  /** Share of a link shared with migrations of equal priority (see Weight). Default 1. */
  weight: Weight.optional(),
  /** Order on a shared link: higher first (see Priority). Default 0. */
  priority: Priority.optional(),
  /**
   * The destination may already hold an earlier copy of a volume under its final name (a regular
   * file, the base): it is replaced at finalize, and chunks whose bytes the base already has at
   * the same offset are referenced by their BLAKE3 instead of sent. Default false (an existing
   * file refuses the migration with DESTINATION_EXISTS).
   */
  incremental: z.boolean().optional(),
});

/** Longest switchover pause a live migration may plan for: 60 s. */
export const MAX_LIVE_DOWNTIME_MS = 60_000;
/** Longest a live migration may run before it gives up: one day. */
export const MAX_LIVE_TIMEOUT_MS = 86_400_000;

/** How a live migration runs (StartMigration with mode "live"). Absent fields: the mover's defaults. */
export const LiveMigrationOptions = z.object({
  /** Longest guest pause precopy may plan for at switchover, ms (1..60000). Default 300 (QEMU's). */
  downtimeLimitMs: z.number().int().min(1).max(MAX_LIVE_DOWNTIME_MS).optional(),
  /** RAM stream limit, bytes per second. Default: none. */
  ramBytesPerSec: BandwidthLimit.optional(),
  /** Disk mirror limit, bytes per second. Default: none. */
  mirrorBytesPerSec: BandwidthLimit.optional(),
  /** When precopy stalls, first throttle the guest's vCPUs (auto-converge). Default true. */
  autoConverge: z.boolean().optional(),
  /** When precopy still stalls, switch to postcopy (the guest runs at the destination at once). Default false. */
  postcopy: z.boolean().optional(),
  /**
   * Mirror guest writes synchronously (write-blocking): for a guest dirtying faster than the link.
   * Default: write-blocking across a WAN (the mirror's tunnel has a round trip of 2 ms or more),
   * background on a local link.
   */
  writeBlocking: z.boolean().optional(),
  /** Give up (the source guest keeps running) after this many ms (1000..86400000). Default 600000. */
  timeoutMs: z.number().int().min(1000).max(MAX_LIVE_TIMEOUT_MS).optional(),
});
export type LiveMigrationOptions = z.infer<typeof LiveMigrationOptions>;

/** Why a migration was refused. Constant strings, stable across versions. */
export const RejectionReason = z.enum([
  "INVALID_JSON",
  "SCHEMA_INVALID",
  "UNSUPPORTED_VERSION",
  "UNKNOWN_COMMAND",
  "CHUNK_SIZE_INVALID",
  "EMPTY_VOLUMES",
  "MIGRATION_ID_IN_USE",
  "UNKNOWN_MIGRATION",
  "UNKNOWN_HOST",
  "HOST_UNREACHABLE",
  "PATH_OUTSIDE_ROOT",
  "SOURCE_NOT_FOUND",
  "SOURCE_NOT_REGULAR_FILE",
  "DESTINATION_EXISTS",
  "DUPLICATE_DESTINATION",
  "SAME_HOST_AND_DIR",
  "PLAN_TOO_LARGE",
]);

/** Why a batch or a whole migration failed. */
export const FailureCode = z.enum([
  "SOURCE_READ_FAILED",
  "SOURCE_CHANGED",
  "DESTINATION_UNREACHABLE",
  "DESTINATION_WRITE_FAILED",
  "NO_SPACE",
  "CHECKSUM_MISMATCH",
  "AUTH_FAILED",
  "PROTOCOL_ERROR",
  "PATH_OUTSIDE_ROOT",
  "VERIFY_FAILED",
  /** The destination's BLAKE3 of a volume differs from the one the source logged: bytes changed in transit. */
  "VOLUME_HASH_MISMATCH",
  "FINALIZE_FAILED",
  "MAX_DELIVERIES",
  "RETRIES_EXHAUSTED",
  /** A live migration failed at some phase; the source guest keeps running, the destination is cleaned up. */
  "LIVE_MIGRATION_FAILED",
  /** A live migration was cancelled and rolled back: the source guest keeps running. */
  "LIVE_MIGRATION_CANCELLED",
  "INTERNAL",
]);

export type RejectionReason = z.infer<typeof RejectionReason>;
export type FailureCode = z.infer<typeof FailureCode>;
export type VolumeKind = z.infer<typeof VolumeKind>;
export type MigrationOptions = z.infer<typeof MigrationOptions>;
