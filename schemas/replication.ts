import { z } from "zod";
import { VmName } from "./names.js";
import { SnapshotVmDefinition, VmState } from "./vm.js";
import {
  FileOwnership,
  HostId,
  Id,
  MAX_CHUNK_BYTES,
  MAX_MESSAGE_CHARS,
  MAX_NAME_CHARS,
  MAX_PATH_CHARS,
  MAX_VOLUMES,
  Timestamp,
} from "./common.js";

// Replication events live on dwcp.evt.replication.<vm> in DWCP_EVT (captured by dwcp.evt.>).
// A snapshot is the set of chunks a manifest names in the destination's content-addressed store;
// the event carries the manifest's digest so a restore can prove it reads the manifest that was
// committed, not a later or a torn one.

const Uint = z.number().int().nonnegative();
const Path = z.string().min(1).max(MAX_PATH_CHARS);
/** Chunks of one volume in a manifest: 16 Mi (64 TiB of 4 MiB chunks). */
export const MAX_MANIFEST_CHUNKS = 16 * 1024 * 1024;
/** Entries of one agent request or reply (hashes asked, chunks put, changes committed). */
export const MAX_FRAME_ENTRIES = 1024 * 1024;
/** Pages of one chunk (4 KiB pages of the largest chunk). */
const MAX_PAGES = MAX_CHUNK_BYTES / 4096;
/** BLAKE3-256, lowercase hex. */
export const Blake3Hex = z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits (BLAKE3-256)");

const base = { vm: VmName, at: Timestamp, version: z.literal(1) };

export const SnapshotVolume = z.object({
  /** File name of the volume in the snapshot (the source's basename). */
  name: z.string().min(1).max(MAX_NAME_CHARS),
  sizeBytes: Uint,
  chunkCount: Uint.max(MAX_MANIFEST_CHUNKS),
});

export const SnapshotCommitted = z
  .object({
    type: z.literal("SnapshotCommitted"),
    ...base,
    /** 2: may carry `vmDefinition` (a version 1 reader refuses the event rather than drop it). */
    version: z.literal([1, 2]),
    snapshotId: Id,
    /** The snapshot this one was computed against (undefined for the first, full sync). */
    parentId: Id.optional(),
    /** When the source was read (the recovery point). */
    takenAt: Timestamp,
    source: z.object({ host: HostId, paths: z.array(Path).min(1).max(MAX_VOLUMES) }),
    destination: z.object({ host: HostId, store: Path }),
    /** Manifest file, relative to the store directory. */
    manifest: Path,
    manifestBlake3: Blake3Hex,
    volumes: z.array(SnapshotVolume).max(MAX_VOLUMES),
    bytes: Uint,
    changedBytes: Uint,
    wireBytes: Uint,
    durationMs: z.number().nonnegative().max(Number.MAX_SAFE_INTEGER),
    /** A running VM's snapshot: its definition, so a restore can start it (`dwcp restore --start`). */
    vmDefinition: SnapshotVmDefinition.optional(),
  })
  .refine((e) => e.vmDefinition === undefined || e.version === 2, { message: "vmDefinition needs version 2" });

export const SnapshotsPruned = z.object({
  type: z.literal("SnapshotsPruned"),
  ...base,
  snapshotIds: z.array(Id).min(1).max(1_000_000),
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
// byte or a reordered line is caught before anything is imported. Version 2 is signed: the header
// names the signer's key, and the trailer's signature covers the format, the signer, the count and
// that SHA-256 (which covers the header: streams, sequences, the signer). Version 1 is unsigned.

export const BACKUP_FORMAT = "dwcp-log-backup";
/** The version `dwcp backup` writes. */
export const BACKUP_VERSION = 2;

export const BackupStream = z.object({
  name: z.string().min(1).max(256),
  /**
   * The stream's configuration as the server reported it: informative only, restore-log takes
   * every stream's configuration from the code.
   */
  config: z.record(z.string(), z.unknown()),
  firstSeq: Uint,
  lastSeq: Uint,
  messages: Uint,
});

/** Public nkey (ed25519): U user, A account, O operator, N server, C cluster. */
export const PublicNkey = z.string().regex(/^[UAONC][A-Z2-7]{55}$/, "must be a public nkey (56 characters, U...)");

export const BackupSigner = z.discriminatedUnion("alg", [
  z.object({ alg: z.literal("ed25519"), publicKey: PublicNkey }),
  /** keyId: the first 16 hex digits of a SHA-256 over the secret, so a wrong secret is named as such. */
  z.object({ alg: z.literal("hmac-sha256"), keyId: z.string().regex(/^[0-9a-f]{16}$/) }),
]);

const headerBase = {
  format: z.literal(BACKUP_FORMAT),
  createdAt: Timestamp,
  streams: z.array(BackupStream).min(1).max(256),
};

export const BackupHeaderV1 = z.object({ ...headerBase, version: z.literal(1) });
export const BackupHeaderV2 = z.object({ ...headerBase, version: z.literal(2), signer: BackupSigner });
export const BackupHeader = z.discriminatedUnion("version", [BackupHeaderV1, BackupHeaderV2]);

export const BackupMessage = z
  .object({
    stream: z.string().min(1).max(256),
    seq: z.number().int().positive(),
    /** Stream timestamp, nanoseconds since the epoch, decimal. */
    ts: z.string().regex(/^\d{1,30}$/),
    subject: z.string().min(1).max(1024),
    /** Headers in order, repeated keys kept (NATS refuses more than 64 KiB of headers). */
    headers: z
      .array(z.tuple([z.string().max(64 * 1024), z.string().max(64 * 1024)]))
      .max(1024)
      .optional(),
    /** Payload, base64 (any bytes; a NATS message is at most 1 MiB by default, 64 MiB at most). */
    data: z
      .string()
      .max(90 * 1024 * 1024)
      .optional(),
    /**
     * Payload as JSON, when JSON.stringify of it reproduces the stored bytes exactly (every dwcp
     * event): readable, and a replay parses it once instead of base64 + a second JSON.parse.
     */
    json: z.unknown().optional(),
  })
  .refine((m) => (m.data === undefined) !== (m.json === undefined), { message: "exactly one of data and json" });

export const BackupTrailer = z.object({
  trailer: z.literal(true),
  count: Uint,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Version 2: base64 of the ed25519 signature (64 bytes) or the HMAC-SHA256 (32 bytes). */
  signature: z
    .string()
    .regex(/^[A-Za-z0-9+/]{40,100}={0,2}$/)
    .optional(),
});

// The replication agent's protocol (services/replication/src/domain/store/frames.ts): the source's
// requests and the agent's replies, one JSON header per frame on the HMAC-authenticated TCP link,
// followed by binary page data. Not on NATS; validated by the receiver of each frame.

export const ManifestVolume = z.object({
  /** A plain file name: restore writes it under the target directory. */
  name: z.string().min(1).max(MAX_NAME_CHARS),
  sizeBytes: Uint,
  /** BLAKE3 per chunk in volume order; null for an all-zero chunk (a hole on restore). */
  chunks: z.array(Blake3Hex.nullable()).max(MAX_MANIFEST_CHUNKS),
  /** The source file's permission bits and owner, which restore gives the file (the owner as root). */
  ...FileOwnership,
});

/** What one snapshot consists of; stored in the destination store, referenced by its BLAKE3. */
export const Manifest = z.object({
  format: z.literal("dwcp-manifest"),
  version: z.literal(1),
  vm: VmName,
  snapshotId: Id,
  parentId: Id.optional(),
  takenAt: Timestamp,
  chunkSizeBytes: Uint.max(MAX_CHUNK_BYTES),
  volumes: z.array(ManifestVolume).max(MAX_VOLUMES),
});

/**
 * One chunk of a "put": rebuilt from `base` (a stored chunk, or zeros when null) with the listed
 * pages replaced (`pages` null: every page), `zero` ones by zeros, the others by the next `bytes`
 * of the frame's (decompressed) payload in order; stored only if it hashes to `hash`.
 */
export const PutChunk = z.object({
  hash: Blake3Hex,
  base: Blake3Hex.nullable(),
  len: z.number().int().min(1).max(MAX_CHUNK_BYTES),
  pages: z.array(Uint.max(MAX_PAGES)).max(MAX_PAGES).nullable(),
  zero: z.array(Uint.max(MAX_PAGES)).max(MAX_PAGES),
  bytes: Uint.max(MAX_CHUNK_BYTES),
});

/**
 * One volume of a "commit-changes": the parent's volume of that name, cut or extended with nulls
 * to `sizeBytes`, with these chunks replaced (hash null: an all-zero chunk).
 */
export const VolumeChanges = z.object({
  name: z.string().min(1).max(MAX_NAME_CHARS),
  sizeBytes: Uint,
  ...FileOwnership,
  changes: z
    .array(z.object({ index: Uint.max(MAX_MANIFEST_CHUNKS), hash: Blake3Hex.nullable() }))
    .max(MAX_FRAME_ENTRIES),
});

export const Codec = z.enum(["lz4", "none"]);
const frame = { version: z.literal(1) };

/**
 * A store directory beneath the agent's root, relative and normalised ("" is the root itself): no
 * "." or ".." component, no empty one, not absolute. The agent also opens it beneath its held root.
 */
export const AgentStoreDir = z
  .string()
  .max(MAX_PATH_CHARS)
  .refine((d) => d === "" || d.split("/").every((c) => c !== "" && c !== "." && c !== ".."), {
    message: 'a store directory is relative to the agent\'s root, without "." or ".." components',
  });

export const AgentRequest = z.discriminatedUnion("kind", [
  /**
   * The connection's first request: its other requests go to the store in <agent root>/<dir>/.dwcp-store.
   * Without it they go to <agent root>/.dwcp-store.
   */
  z.object({ kind: z.literal("open"), ...frame, dir: AgentStoreDir }),
  /** Which of these chunks does the store hold? (dedup before sending anything) */
  z.object({ kind: z.literal("have"), ...frame, hashes: z.array(Blake3Hex).max(MAX_FRAME_ENTRIES) }),
  /** Many chunks at once; the payload is their pages back to back. */
  z
    .object({
      kind: z.literal("put"),
      ...frame,
      chunks: z.array(PutChunk).max(MAX_FRAME_ENTRIES),
      codec: Codec,
      /** Bytes of the payload once decompressed (the chunks' `bytes` in all): at most 1 GiB per frame. */
      rawLength: Uint.max(1024 * 1024 * 1024),
    })
    .refine((put) => put.chunks.reduce((n, c) => n + c.bytes, 0) === put.rawLength, {
      message: "rawLength must be the sum of the chunks' bytes",
    }),
  /** Every chunk is in place: make the manifest durable. */
  z.object({ kind: z.literal("commit"), ...frame, manifest: Manifest }),
  /**
   * The same, for a manifest that differs little from its parent, the last one this agent
   * committed for the VM: only the chunks that changed travel. An agent that does not hold that
   * parent answers PARENT_UNKNOWN, and the source sends the whole manifest.
   */
  z.object({
    kind: z.literal("commit-changes"),
    ...frame,
    vm: VmName,
    snapshotId: Id,
    parentId: Id,
    takenAt: Timestamp,
    chunkSizeBytes: Uint.max(MAX_CHUNK_BYTES),
    volumes: z.array(VolumeChanges).max(MAX_VOLUMES),
  }),
]);

/** What became of one chunk of a "put": stored (or already there), or send it whole. */
export const PutOutcome = z.enum(["stored", "dedup", "need-full"]);

export const AgentReply = z.discriminatedUnion("kind", [
  /** The store an "open" selected: its path on the agent's host, as a snapshot records it. */
  z.object({ kind: z.literal("opened"), ...frame, store: Path }),
  z.object({ kind: z.literal("have-result"), ...frame, have: z.array(z.boolean()).max(MAX_FRAME_ENTRIES) }),
  z.object({
    kind: z.literal("put-result"),
    ...frame,
    outcomes: z.array(PutOutcome).max(MAX_FRAME_ENTRIES),
    reasons: z.array(z.string().max(MAX_MESSAGE_CHARS)).max(MAX_FRAME_ENTRIES).optional(),
  }),
  z.object({ kind: z.literal("committed"), ...frame, manifest: Path, blake3: Blake3Hex }),
  z.object({
    kind: z.literal("error"),
    ...frame,
    code: z.string().min(1).max(64),
    message: z.string().max(MAX_MESSAGE_CHARS),
  }),
]);

export type ManifestVolume = z.infer<typeof ManifestVolume>;
export type Manifest = z.infer<typeof Manifest>;
export type PutChunk = z.infer<typeof PutChunk>;
export type VolumeChanges = z.infer<typeof VolumeChanges>;
export type Codec = z.infer<typeof Codec>;
export type PutOutcome = z.infer<typeof PutOutcome>;
export type AgentRequest = z.infer<typeof AgentRequest>;
export type AgentReply = z.infer<typeof AgentReply>;

export type BackupStream = z.infer<typeof BackupStream>;
export type BackupHeader = z.infer<typeof BackupHeader>;
export type BackupHeaderV2 = z.infer<typeof BackupHeaderV2>;
export type BackupSigner = z.infer<typeof BackupSigner>;
export type BackupMessage = z.infer<typeof BackupMessage>;
export type BackupTrailer = z.infer<typeof BackupTrailer>;

// The replication service's commands (services/replication/src/app/service.ts): request/reply on
// dwcp.replication.<source host>.rpc (queue group "replication"). The service answers on the
// request's reply subject several times: accepted (or rejected), working (a heartbeat while the
// sync runs), then synced or failed. Paths are relative to the service's root for that host.

/** A path as the user gave it after HOST:, resolved under the service's root for that host. */
const HostPath = z.string().min(1).max(4096);

export const ReplicateVm = z
  .object({
    type: z.literal("ReplicateVm"),
    /** 2: `source.running` may be set (a version 1 service refuses it rather than read a running VM's files). */
    version: z.union([z.literal(1), z.literal(2)]),
    /** Names the command in the service's logs and replies. */
    commandId: Id,
    vm: VmName,
    source: z.object({
      host: HostId,
      /** Image paths under the host's root; none with `running` (the VM's definition names its disks). */
      paths: z.array(HostPath).max(64),
      /**
       * Read the VM `vm` that runs under QEMU on the host (`dwcp vm`) at one point in time, through
       * fleecing and its dirty bitmaps, instead of files.
       */
      running: z.literal(true).optional(),
    }),
    /** The store is <dir>/.dwcp-store on `host`; `agent` is that host's replication agent, if remote. */
    destination: z.object({
      host: HostId,
      dir: HostPath,
      agent: z.object({ host: z.string().min(1).max(255), port: z.number().int().min(1).max(65535) }).optional(),
    }),
    /** Bytes per stored chunk: a multiple of 4 KiB up to 64 MiB. */
    chunkSizeBytes: z
      .number()
      .int()
      .min(4096)
      .max(MAX_CHUNK_BYTES)
      .refine((n) => n % 4096 === 0, { message: "must be a multiple of 4096" })
      .optional(),
    /** Applied after the sync when the store is local to the service (a remote agent prunes itself). */
    retention: z
      .union([
        z.object({ keep: z.number().int().min(1).max(1_000_000) }),
        z.object({
          keepForMs: z
            .number()
            .int()
            .min(1)
            .max(100 * 365 * 86_400_000),
        }),
      ])
      .optional(),
  })
  .refine((c) => (c.source.running === true ? c.source.paths.length === 0 : c.source.paths.length > 0), {
    message: "source.paths: one or more image paths, or none with source.running",
  })
  .refine((c) => c.source.running === undefined || c.version === 2, {
    message: "source.running needs version 2",
  });

/**
 * Write a VM's volumes as they were at a snapshot into `to.dir` on `to.host`: sent to that host's
 * service, which reads the store the snapshot's event names (or `storeDir`, under its root).
 */
export const RestoreVm = z
  .object({
    type: z.literal("RestoreVm"),
    /** 2: `start` may be set (a version 1 service refuses it rather than only write the volumes). */
    version: z.union([z.literal(1), z.literal(2)]),
    commandId: Id,
    vm: VmName,
    /** The newest snapshot taken at or before this time. */
    at: Timestamp.optional(),
    snapshotId: Id.optional(),
    to: z.object({ host: HostId, dir: HostPath }),
    storeDir: HostPath.optional(),
    /**
     * Version 2: once the volumes are written, fsynced and verified, start the VM from them on
     * `to.host` with the definition its snapshot recorded (refused before anything is written if
     * the snapshot has none or a VM of that name runs there).
     */
    start: z.literal(true).optional(),
  })
  .refine((c) => (c.at === undefined) !== (c.snapshotId === undefined), {
    message: "exactly one of at and snapshotId",
  })
  .refine((c) => c.start === undefined || c.version === 2, { message: "start needs version 2" });

/** Is the service for this host there? (readiness probe; answered with ReplicationPong) */
export const PingReplication = z.object({ type: z.literal("PingReplication"), version: z.literal(1) });

export const ReplicationCommand = z.discriminatedUnion("type", [ReplicateVm, RestoreVm, PingReplication]);

const Ms = z.number().nonnegative();
/** What one sync did, as `dwcp replicate --json` prints it (SyncResult without its event). */
export const SyncSummary = z.object({
  snapshotId: Id,
  parentId: Id.optional(),
  bytes: Uint,
  seconds: z.number().nonnegative(),
  phases: z.object({ prepareMs: Ms, volumesMs: Ms, commitMs: Ms, appendMs: Ms, cacheMs: Ms }),
  changedBytes: Uint,
  wireBytes: Uint,
  chunksSent: Uint,
  fullResends: Uint,
  /** A running VM's sync: bytes read from its point-in-time view, all disks. */
  readBytes: Uint.optional(),
  /** A running VM's sync: how each disk was read (only dirty blocks, or all, and why). */
  disks: z
    .array(
      z.object({
        name: z.string().min(1).max(255),
        mode: z.enum(["incremental", "full"]),
        reason: z.string().max(256).optional(),
        readBytes: Uint,
        sizeBytes: Uint,
      }),
    )
    .max(16)
    .optional(),
});

/** What one restore wrote, as `dwcp restore --json` prints it. */
export const RestoreSummary = z.object({
  snapshotId: Id,
  takenAt: Timestamp,
  files: z.array(z.object({ path: z.string().min(1).max(4096), sizeBytes: Uint })).max(64),
  bytes: Uint,
  seconds: z.number().nonnegative(),
  finalSyncSeconds: z.number().nonnegative(),
  directBytes: Uint,
  /** With `start`: the VM started from the restored volumes. */
  started: z
    .object({ name: VmName, state: VmState, pid: z.number().int().positive().optional(), dir: z.string().max(4096) })
    .optional(),
});

const Message = z.string().max(4096);
const replyBase = { version: z.literal(1), commandId: Id.optional() };

export const ReplicationReply = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ReplicationAccepted"), ...replyBase, host: HostId }),
  /** Sent every few seconds while the sync runs: a client that hears nothing for long gives up. */
  z.object({ type: z.literal("ReplicationWorking"), ...replyBase }),
  z.object({
    type: z.literal("ReplicationSynced"),
    ...replyBase,
    result: SyncSummary,
    pruned: z.array(Id).max(1_000_000),
    chunksDeleted: Uint.optional(),
  }),
  z.object({ type: z.literal("ReplicationRestored"), ...replyBase, result: RestoreSummary }),
  /** The command ran and failed (a failed sync leaves the previous snapshot the latest). */
  z.object({
    type: z.literal("ReplicationFailed"),
    ...replyBase,
    code: z.string().min(1).max(64),
    retryable: z.boolean(),
    message: Message,
  }),
  /** The command was not run: invalid, for another host, or the VM is already syncing. */
  z.object({ type: z.literal("ReplicationRejected"), ...replyBase, code: z.string().min(1).max(64), message: Message }),
  z.object({ type: z.literal("ReplicationPong"), ...replyBase, host: HostId, syncing: z.array(Id).max(10_000) }),
]);

export type ReplicateVm = z.infer<typeof ReplicateVm>;
export type PingReplication = z.infer<typeof PingReplication>;
export type RestoreVm = z.infer<typeof RestoreVm>;
export type RestoreSummary = z.infer<typeof RestoreSummary>;
export type ReplicationCommand = z.infer<typeof ReplicationCommand>;
export type SyncSummary = z.infer<typeof SyncSummary>;
export type ReplicationReply = z.infer<typeof ReplicationReply>;
