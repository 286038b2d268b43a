import { z } from "zod";
import { HostId, Id, Timestamp } from "./common.js";

// Replication events live on dwcp.evt.replication.<vm> in DWCP_EVT (captured by dwcp.evt.>).
// A snapshot is the set of chunks a manifest names in the destination's content-addressed store;
// the event carries the manifest's digest so a restore can prove it reads the manifest that was
// committed, not a later or a torn one.

const Uint = z.number().int().nonnegative();
/** BLAKE3-256, lowercase hex. */
export const Blake3Hex = z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits (BLAKE3-256)");

const base = { vm: Id, at: Timestamp, version: z.literal(1) };

export const SnapshotVolume = z.object({
  /** File name of the volume in the snapshot (the source's basename). */
  name: z.string().min(1).max(255),
  sizeBytes: Uint,
  chunkCount: Uint,
});

export const SnapshotCommitted = z.object({
  type: z.literal("SnapshotCommitted"),
  ...base,
  snapshotId: Id,
  /** The snapshot this one was computed against (undefined for the first, full sync). */
  parentId: Id.optional(),
  /** When the source was read (the recovery point). */
  takenAt: Timestamp,
  source: z.object({ host: HostId, paths: z.array(z.string()).min(1) }),
  destination: z.object({ host: HostId, store: z.string().min(1) }),
  /** Manifest file, relative to the store directory. */
  manifest: z.string().min(1),
  manifestBlake3: Blake3Hex,
  volumes: z.array(SnapshotVolume),
  bytes: Uint,
  changedBytes: Uint,
  wireBytes: Uint,
  durationMs: z.number().nonnegative(),
});

export const SnapshotsPruned = z.object({
  type: z.literal("SnapshotsPruned"),
  ...base,
  snapshotIds: z.array(Id).min(1),
  /** Chunks deleted because no kept snapshot referenced them. */
  chunksDeleted: Uint,
});

export const ReplicationEvent = z.discriminatedUnion("type", [SnapshotCommitted, SnapshotsPruned]);

export type SnapshotVolume = z.infer<typeof SnapshotVolume>;
export type SnapshotCommitted = z.infer<typeof SnapshotCommitted>;
export type SnapshotsPruned = z.infer<typeof SnapshotsPruned>;
export type ReplicationEvent = z.infer<typeof ReplicationEvent>;

// `dwcp backup` files: JSON lines. A header, one line per stored message, and a trailer with the
// count and a SHA-256 over every preceding line (each with its "\n"), so truncation, a flipped
// byte or a reordered line is caught before anything is imported.

export const BACKUP_FORMAT = "dwcp-log-backup";

export const BackupStream = z.object({
  name: z.string().min(1),
  /** The stream's configuration as the server reported it (restored as a plain stream). */
  config: z.record(z.string(), z.unknown()),
  firstSeq: Uint,
  lastSeq: Uint,
  messages: Uint,
});

export const BackupHeader = z.object({
  format: z.literal(BACKUP_FORMAT),
  version: z.literal(1),
  createdAt: Timestamp,
  streams: z.array(BackupStream).min(1),
});

export const BackupMessage = z.object({
  stream: z.string().min(1),
  seq: z.number().int().positive(),
  /** Stream timestamp, nanoseconds since the epoch, decimal. */
  ts: z.string().regex(/^\d+$/),
  subject: z.string().min(1),
  /** Headers in order, repeated keys kept. */
  headers: z.array(z.tuple([z.string(), z.string()])).optional(),
  /** Payload, base64 (any bytes). */
  data: z.string().optional(),
  /**
   * Payload as JSON, when JSON.stringify of it reproduces the stored bytes exactly (every dwcp
   * event): readable, and a replay parses it once instead of base64 + a second JSON.parse.
   */
  json: z.unknown().optional(),
}).refine((m) => (m.data === undefined) !== (m.json === undefined), { message: "exactly one of data and json" });

export const BackupTrailer = z.object({
  trailer: z.literal(true),
  count: Uint,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export type BackupStream = z.infer<typeof BackupStream>;
export type BackupHeader = z.infer<typeof BackupHeader>;
export type BackupMessage = z.infer<typeof BackupMessage>;
export type BackupTrailer = z.infer<typeof BackupTrailer>;
