import { z } from "zod";
import { NONCE_BYTES, PROOF_BYTES } from "#common/secure-link/handshake.js";
import { ChunkSize, FailureCode, HostId, Id } from "#schemas/index.js";
import type { Segment } from "./segments.js";
import { InvariantViolationError } from "#common/errors.js";

/**
 * DWCP data channel v1. Every frame is a fixed 32-byte big-endian header followed by
 * `payloadLength` bytes:
 *
 *   0  u32 magic 'DWCP'     8  u32 payloadLength   20  u32 length (CHUNK) | chunkCount (BATCH_END,
 *   4  u8  version (1)     12  u64 offset                RESUME_AT, BASE_SUMS)
 *                                                  24  u32 crc32c (CHUNK) | id (BASE_SUMS)
 *   5  u8  type                                    28  u32 segmentCount (CHUNK)
 *   6  u16 flags (bit 0: ZERO, CHUNK only)
 *
 * Fields a type does not use are zero. A CHUNK payload is the segment table (segmentCount ×
 * {u32 relOffset, u32 length}) followed by the bytes of those segments in table order; the
 * logical chunk is those segments with zeros everywhere else. A CHUNK with the BASE flag (only in
 * an incremental batch) has no segments: its payload is the 32-byte BLAKE3 of the source's chunk,
 * whose bytes the destination takes from its base file at the same offset if they match. Control
 * payloads are binary for CHALLENGE/HELLO, RESUME_AT and BASE_SUMS, and UTF-8 JSON for BATCH_BEGIN,
 * CHUNK_ERR, BATCH_ERR and AUTH_FAIL.
 *
 * Revision `dwcp/1.1`, taken by ALPN on a TLS link (DATA_ALPN): the HELLO answers a nonce the TLS
 * session exports (no CHALLENGE, one round trip less), and an incremental batch may ask for
 * BASE_SUMS. A peer that offers no ALPN speaks revision 1 as before.
 */
export const MAGIC = 0x44574350; // "DWCP"
/** The ALPN name of revision 1.1 (see above). */
export const DATA_ALPN = "dwcp/1.1";
export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 32;
export const SEGMENT_ENTRY_BYTES = 8;
export const PAGE_BYTES = 4096;
/** The handshake's nonce and MAC sizes are those of the shared-key proof. */
export { NONCE_BYTES };
export const MAC_BYTES = PROOF_BYTES;
export const FLAG_ZERO = 0x1;
/** The segment bytes travel as one LZ4 block (lz4-napi framing) of their concatenation. */
export const FLAG_LZ4 = 0x2;
/** The segment bytes travel as one zstd frame (declaring its content size) of their concatenation. */
export const FLAG_ZSTD = 0x4;
/** How a CHUNK's segment bytes are packed on the wire (absent: as they are). */
export type PackedCodec = "lz4" | "zstd";
/**
 * HELLO: the sender can seal its bulk direction (native AES-GCM records under keys exported from
 * the TLS session); AUTH_OK: the destination switched to reading sealed records, and everything
 * the sender writes from now on must be one. Only on a TLS link.
 */
export const FLAG_SEALED = 0x8;
// The same flag on TUNNEL_OPEN offers to carry the tunnel's source → destination bytes as sealed
// records (a raw tunnel on TLS only), and on TUNNEL_OK says the destination switched to reading them.
/**
 * HELLO: this connection is a tunnel (see TUNNEL_OPEN), not a batch link: after AUTH_OK the
 * sender names its channel, and once TUNNEL_OK answers, the connection carries one raw byte
 * stream in each direction and no more frames.
 */
export const FLAG_TUNNEL = 0x10;

/**
 * CHUNK: this chunk's bytes are the destination's base file's bytes at the same offset and
 * length; the payload is the BLAKE3-256 of the source's chunk (the header's CRC32C is the
 * source's, as always). Only in a batch whose BATCH_BEGIN says `incremental`.
 */
export const FLAG_BASE = 0x20;
/** A BASE chunk's payload: one BLAKE3-256 digest. */
export const BASE_DIGEST_BYTES = 32;
/** One chunk's entry in BASE_SUMS: its CRC32C (u32) and BLAKE3-256 in the base. */
export const BASE_SUM_BYTES = 4 + BASE_DIGEST_BYTES;

/** Before authentication nothing larger than this is read (CHALLENGE, HELLO, AUTH_*). */
export const MAX_PREAUTH_PAYLOAD = 4 * 1024;
/** Any control frame after authentication. */
export const MAX_CONTROL_PAYLOAD = 64 * 1024;
/** Largest logical chunk: the largest chunk size the schemas allow. */
export const MAX_CHUNK_LENGTH = 64 * 1024 * 1024;

export const FRAME_CODES = {
  CHALLENGE: 1,
  HELLO: 2,
  AUTH_OK: 3,
  AUTH_FAIL: 4,
  BATCH_BEGIN: 5,
  CHUNK: 6,
  CHUNK_OK: 7,
  CHUNK_ERR: 8,
  BATCH_END: 9,
  BATCH_OK: 10,
  BATCH_ERR: 11,
  TUNNEL_OPEN: 12,
  TUNNEL_OK: 13,
  TUNNEL_ERR: 14,
  RESUME_AT: 15,
  BASE_SUMS: 16,
} as const;
export type FrameKind = keyof typeof FRAME_CODES;

const KIND_BY_CODE = new Map<number, FrameKind>(
  Object.entries(FRAME_CODES).map(([kind, code]) => [code, kind as FrameKind]),
);
export function frameKindOf(code: number): FrameKind | undefined {
  return KIND_BY_CODE.get(code);
}

/** What the source announces before the chunks of one batch. The destination re-validates it. */
export const BatchBegin = z.strictObject({
  migrationId: Id,
  batch: z.number().int().nonnegative(),
  attempt: z.number().int().nonnegative(),
  destDir: z.string().min(1).max(4096),
  destName: z.string().min(1).max(255),
  volumeSizeBytes: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  chunkSizeBytes: ChunkSize,
  firstChunk: z.number().int().nonnegative(),
  chunkCount: z.number().int().nonnegative(),
  /**
   * JetStream delivery count of the work item (1 for the first delivery): with `attempt`, the
   * fencing token (see fence.ts). Optional and only sent when known, so older destinations that
   * do not know the field keep working with senders that do not know it either.
   */
  delivery: z.number().int().positive().optional(),
  /**
   * false: the destination does not read the batch back after its fsync (the migration's
   * `verify: false`). Absent: it does. Sent only when false, so older destinations keep working.
   */
  verify: z.literal(false).optional(),
  /**
   * The sender stripes the batch over several connections: each BATCH_BEGIN names its own run of
   * chunks (firstChunk, chunkCount) and every stripe carries the same id and token, so they hold
   * the batch together (see fence.ts). Each stripe is fsynced and answered on its own. Sent only
   * when striping.
   */
  stripe: z
    .string()
    .regex(/^[A-Za-z0-9_-]{8,64}$/)
    .optional(),
  /**
   * The sender may have sent part of this run before (its connection dropped, or an earlier
   * delivery of the batch's work item did): the destination answers RESUME_AT with the run's
   * committed prefix before any chunk is sent (see resume.ts). Sent only then.
   */
  resume: z.literal(true).optional(),
  /**
   * An incremental migration: the destination's final file, if it is a regular file, is the base
   * that BASE chunks refer to. Sent only when true.
   */
  incremental: z.literal(true).optional(),
  /**
   * With `incremental`, on a `dwcp/1.1` link: the sender takes BASE_SUMS of this volume's base,
   * tagged with this number (the link's sender numbers the volumes it asks for), the
   * destination's digests of its base's chunks sent ahead, so that it sends a changed chunk's data
   * at once and refers only to chunks the base holds. Sent only then.
   */
  baseSums: z
    .number()
    .int()
    .nonnegative()
    .max(2 ** 32 - 1)
    .optional(),
});
export type BatchBegin = z.infer<typeof BatchBegin>;

/**
 * A failure the destination reports. Besides the FailureCodes of the event schema, the data
 * channel has one code of its own: FENCED, "a newer holder of this batch exists; stop" (see
 * fence.ts). It never becomes an event code: the sender that receives it no longer owns the batch.
 */
export const FENCED = "FENCED";
/**
 * Two more wire-only codes, answers to a BASE chunk (CHUNK_ERR) that ask for its data: the base
 * differs there (or is shorter), or there is no base file for the volume at all.
 */
export const BASE_MISMATCH = "BASE_MISMATCH";
export const NO_BASE = "NO_BASE";
export const WireCode = z.union([FailureCode, z.literal(FENCED), z.literal(BASE_MISMATCH), z.literal(NO_BASE)]);
export type WireCode = z.infer<typeof WireCode>;
export const WireFailure = z.strictObject({ code: WireCode, message: z.string().max(4096) });
export type WireFailure = z.infer<typeof WireFailure>;

export const AuthFailPayload = z.strictObject({ message: z.string().max(1024) });

export const Hello = z.strictObject({ migrationId: Id, sourceHost: HostId });

/** A tunnel's channel: which of the destination's unix sockets for the migration it reaches. */
export const TunnelChannel = z.string().regex(/^[a-z][a-z0-9-]{0,31}$/);
/**
 * `codec`: the source → destination bytes come as tunnel blocks (tunnel-blocks.ts), compressed
 * with it where that paid. Absent: raw bytes, as before.
 */
export const TunnelOpen = z.strictObject({ channel: TunnelChannel, codec: z.enum(["lz4", "zstd"]).optional() });

export interface ChunkHeader {
  offset: number;
  length: number;
  crc32c: number;
  zero: boolean;
  segments: Segment[];
  /** With FLAG_LZ4 or FLAG_ZSTD: bytes of compressed segment data after the table. */
  packedLength?: number;
  /** Set with packedLength: which codec packed the segment bytes. */
  codec?: PackedCodec;
  /** FLAG_BASE: the BLAKE3-256 of the source's chunk (no segments; the bytes are the base's). */
  base?: Uint8Array;
}

export type ControlFrame =
  | { kind: "CHALLENGE"; nonce: Uint8Array }
  | { kind: "HELLO"; migrationId: string; sourceHost: string; mac: Uint8Array; sealed?: boolean; tunnel?: boolean }
  | { kind: "AUTH_OK"; sealed?: boolean }
  | { kind: "AUTH_FAIL"; message: string }
  | { kind: "BATCH_BEGIN"; begin: BatchBegin }
  | { kind: "CHUNK_OK"; offset: number }
  | { kind: "CHUNK_ERR"; offset: number; failure: WireFailure }
  | { kind: "BATCH_END"; chunkCount: number }
  | { kind: "BATCH_OK" }
  | { kind: "BATCH_ERR"; failure: WireFailure }
  | { kind: "TUNNEL_OPEN"; channel: string; codec?: PackedCodec; sealed?: boolean }
  | { kind: "TUNNEL_OK"; sealed?: boolean }
  | { kind: "TUNNEL_ERR"; message: string }
  /** The CRC32C of each chunk of the run's committed prefix, in order (the prefix's length is theirs). */
  | { kind: "RESUME_AT"; crc32c: number[] }
  /**
   * The base's digests of consecutive chunks from `offset` (a chunk boundary), in order, of the
   * volume the BATCH_BEGIN `baseSums` numbered `id`; `none` where the base holds no such chunk (a
   * hole throughout, or it ends inside the chunk).
   */
  | { kind: "BASE_SUMS"; id: number; offset: number; sums: BaseSum[] };

/** A base chunk's digests, or none (no data there). */
export type BaseSum = { crc32c: number; blake3: Uint8Array } | "none";

/** Most chunks one BASE_SUMS names. */
export const MAX_BASE_SUMS = Math.floor(MAX_CONTROL_PAYLOAD / BASE_SUM_BYTES);

/** Most chunks a RESUME_AT names: a control frame's payload of 4-byte CRC32Cs. */
export const MAX_RESUME_CHUNKS = MAX_CONTROL_PAYLOAD / 4;

export interface RawHeader {
  magic: number;
  version: number;
  code: number;
  flags: number;
  payloadLength: number;
  offset: number;
  length: number;
  crc32c: number;
  segmentCount: number;
}

interface HeaderFields {
  flags?: number;
  payloadLength?: number;
  offset?: number;
  length?: number;
  crc32c?: number;
  segmentCount?: number;
}

export function writeHeader(target: Uint8Array, kind: FrameKind, fields: HeaderFields): void {
  const view = new DataView(target.buffer, target.byteOffset, HEADER_BYTES);
  const offset = fields.offset ?? 0;
  view.setUint32(0, MAGIC);
  view.setUint8(4, PROTOCOL_VERSION);
  view.setUint8(5, FRAME_CODES[kind]);
  view.setUint16(6, fields.flags ?? 0);
  view.setUint32(8, fields.payloadLength ?? 0);
  view.setUint32(12, Math.floor(offset / 2 ** 32));
  view.setUint32(16, offset >>> 0);
  view.setUint32(20, fields.length ?? 0);
  view.setUint32(24, fields.crc32c ?? 0);
  view.setUint32(28, fields.segmentCount ?? 0);
}

/** Parses the fixed fields; validation is the decoder's job. `offset` may exceed 2^53 (checked there). */
export function readHeader(bytes: Uint8Array): RawHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  return {
    magic: view.getUint32(0),
    version: view.getUint8(4),
    code: view.getUint8(5),
    flags: view.getUint16(6),
    payloadLength: view.getUint32(8),
    offset: view.getUint32(12) * 2 ** 32 + view.getUint32(16),
    length: view.getUint32(20),
    crc32c: view.getUint32(24),
    segmentCount: view.getUint32(28),
  };
}

const utf8 = new TextEncoder();

function frame(kind: FrameKind, payload: Uint8Array, fields: HeaderFields = {}): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  writeHeader(out, kind, { ...fields, payloadLength: payload.length });
  out.set(payload, HEADER_BYTES);
  return out;
}

const json = (value: unknown): Uint8Array => utf8.encode(JSON.stringify(value));

function helloPayload(f: { migrationId: string; sourceHost: string; mac: Uint8Array }): Uint8Array {
  const id = utf8.encode(f.migrationId);
  const host = utf8.encode(f.sourceHost);
  const out = new Uint8Array(MAC_BYTES + 2 + id.length + host.length);
  out.set(f.mac, 0);
  out[MAC_BYTES] = id.length;
  out.set(id, MAC_BYTES + 1);
  out[MAC_BYTES + 1 + id.length] = host.length;
  out.set(host, MAC_BYTES + 2 + id.length);
  return out;
}

/** One complete control frame (header + payload). */
export function encodeControl(f: ControlFrame): Uint8Array {
  const none = new Uint8Array(0);
  switch (f.kind) {
    case "CHALLENGE":
      return frame(f.kind, f.nonce);
    case "HELLO":
      return frame(f.kind, helloPayload(f), {
        flags: (f.sealed === true ? FLAG_SEALED : 0) | (f.tunnel === true ? FLAG_TUNNEL : 0),
      });
    case "AUTH_OK":
      return frame(f.kind, none, { flags: f.sealed === true ? FLAG_SEALED : 0 });
    case "BATCH_OK":
      return frame(f.kind, none);
    case "AUTH_FAIL":
      return frame(f.kind, json({ message: f.message }));
    case "BATCH_BEGIN":
      return frame(f.kind, json(f.begin));
    case "CHUNK_OK":
      return frame(f.kind, none, { offset: f.offset });
    case "CHUNK_ERR":
      return frame(f.kind, json(f.failure), { offset: f.offset });
    case "BATCH_END":
      return frame(f.kind, none, { length: f.chunkCount });
    case "BATCH_ERR":
      return frame(f.kind, json(f.failure));
    case "TUNNEL_OPEN":
      return frame(
        f.kind,
        json(f.codec === undefined ? { channel: f.channel } : { channel: f.channel, codec: f.codec }),
        { flags: f.sealed === true ? FLAG_SEALED : 0 },
      );
    case "TUNNEL_OK":
      return frame(f.kind, none, { flags: f.sealed === true ? FLAG_SEALED : 0 });
    case "TUNNEL_ERR":
      return frame(f.kind, json({ message: f.message }));
    case "RESUME_AT": {
      const payload = new Uint8Array(f.crc32c.length * 4);
      const view = new DataView(payload.buffer);
      f.crc32c.forEach((crc, i) => view.setUint32(i * 4, crc));
      return frame(f.kind, payload, { length: f.crc32c.length });
    }
    case "BASE_SUMS":
      return frame(f.kind, baseSumsPayload(f.sums), { offset: f.offset, length: f.sums.length, crc32c: f.id });
    default: {
      const never: never = f;
      throw new InvariantViolationError(`unknown frame ${JSON.stringify(never)}`);
    }
  }
}

/** Each entry CRC32C then BLAKE3; `none` is all zero bytes (no chunk's BLAKE3 is). */
function baseSumsPayload(sums: readonly BaseSum[]): Uint8Array {
  if (sums.length === 0 || sums.length > MAX_BASE_SUMS)
    throw new InvariantViolationError(`BASE_SUMS names 1..${MAX_BASE_SUMS} chunks, got ${sums.length}`);
  const payload = new Uint8Array(sums.length * BASE_SUM_BYTES);
  const view = new DataView(payload.buffer);
  sums.forEach((s, i) => {
    if (s === "none") return;
    if (s.blake3.length !== BASE_DIGEST_BYTES)
      throw new InvariantViolationError(`a BASE_SUMS entry carries a ${BASE_DIGEST_BYTES}-byte BLAKE3`);
    view.setUint32(i * BASE_SUM_BYTES, s.crc32c);
    payload.set(s.blake3, i * BASE_SUM_BYTES + 4);
  });
  return payload;
}

/** Bytes of segment data a CHUNK frame carries after its table. */
export function segmentBytes(segments: readonly Segment[]): number {
  return segments.reduce((sum, s) => sum + s.length, 0);
}

function packedFlag(h: ChunkHeader): number {
  if (h.packedLength === undefined) return 0;
  return h.codec === "zstd" ? FLAG_ZSTD : FLAG_LZ4;
}

/**
 * Header and segment table of a CHUNK frame. The segment bytes follow on the wire, in table
 * order, either as buffer slices or straight from the source file (sendfile).
 */
export function encodeChunkHead(h: ChunkHeader): Uint8Array {
  if (h.base !== undefined) return encodeBaseChunk(h, h.base);
  const table = h.segments.length * SEGMENT_ENTRY_BYTES;
  const out = new Uint8Array(HEADER_BYTES + table);
  writeHeader(out, "CHUNK", {
    flags: (h.zero ? FLAG_ZERO : 0) | packedFlag(h),
    payloadLength: table + (h.packedLength ?? segmentBytes(h.segments)),
    offset: h.offset,
    length: h.length,
    crc32c: h.crc32c,
    segmentCount: h.segments.length,
  });
  const view = new DataView(out.buffer, HEADER_BYTES, table);
  h.segments.forEach((s, i) => {
    view.setUint32(i * SEGMENT_ENTRY_BYTES, s.relOffset);
    view.setUint32(i * SEGMENT_ENTRY_BYTES + 4, s.length);
  });
  return out;
}

/** A whole BASE CHUNK frame: the header and the source chunk's BLAKE3. */
export function encodeBaseChunk(h: Pick<ChunkHeader, "offset" | "length" | "crc32c">, blake3: Uint8Array): Uint8Array {
  if (blake3.length !== BASE_DIGEST_BYTES)
    throw new InvariantViolationError(`a BASE chunk carries a ${BASE_DIGEST_BYTES}-byte BLAKE3, got ${blake3.length}`);
  return frame("CHUNK", blake3, { flags: FLAG_BASE, offset: h.offset, length: h.length, crc32c: h.crc32c });
}

/** A whole CHUNK frame from the logical chunk bytes (tests and the copying send path). */
export function encodeChunk(h: ChunkHeader, logical: Uint8Array): Uint8Array {
  const head = encodeChunkHead(h);
  const out = new Uint8Array(head.length + segmentBytes(h.segments));
  out.set(head, 0);
  let at = head.length;
  for (const s of h.segments) {
    out.set(logical.subarray(s.relOffset, s.relOffset + s.length), at);
    at += s.length;
  }
  return out;
}
