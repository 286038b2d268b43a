import { ByteQueue } from "#common/secure-link/byte-queue.js";
import type { IncrementalDecoder } from "#common/secure-link/reader.js";
import {
  AuthFailPayload,
  BASE_DIGEST_BYTES,
  BASE_SUM_BYTES,
  BatchBegin,
  FLAG_BASE,
  FLAG_LZ4,
  FLAG_SEALED,
  FLAG_TUNNEL,
  FLAG_ZSTD,
  FLAG_ZERO,
  frameKindOf,
  HEADER_BYTES,
  Hello,
  MAC_BYTES,
  MAGIC,
  MAX_CHUNK_LENGTH,
  MAX_BASE_SUMS,
  MAX_CONTROL_PAYLOAD,
  MAX_PREAUTH_PAYLOAD,
  NONCE_BYTES,
  PROTOCOL_VERSION,
  readHeader,
  SEGMENT_ENTRY_BYTES,
  TunnelOpen,
  WireFailure,
  type BaseSum,
  type ChunkHeader,
  type ControlFrame,
  type FrameKind,
  type RawHeader,
} from "./frames.js";
import { gapsOf, SEGMENT_PAGE_BYTES, segmentTableProblem, type Segment } from "./segments.js";
import { InvariantViolationError } from "#common/errors.js";

/** What the decoder accepts right now. Checked against each header before anything is allocated. */
export interface DecoderLimits {
  accept: ReadonlySet<FrameKind>;
  maxControlPayload: number;
  /** Largest logical CHUNK length accepted; bounds the buffer the consumer provides. */
  maxChunkLength: number;
}

export const SERVER_PREAUTH: DecoderLimits = {
  accept: new Set<FrameKind>(["HELLO"]),
  maxControlPayload: MAX_PREAUTH_PAYLOAD,
  maxChunkLength: 0,
};
export const CLIENT_PREAUTH: DecoderLimits = {
  accept: new Set<FrameKind>(["CHALLENGE", "AUTH_OK", "AUTH_FAIL"]),
  maxControlPayload: MAX_PREAUTH_PAYLOAD,
  maxChunkLength: 0,
};
export const CLIENT_SESSION: DecoderLimits = {
  accept: new Set<FrameKind>(["CHUNK_OK", "CHUNK_ERR", "BATCH_OK", "BATCH_ERR", "RESUME_AT", "BASE_SUMS"]),
  maxControlPayload: MAX_CONTROL_PAYLOAD,
  maxChunkLength: 0,
};
/** Client of a kept link awaiting the answer to a later HELLO (BASE_SUMS the link was sent before it). */
export const CLIENT_REHELLO: DecoderLimits = {
  accept: new Set<FrameKind>(["AUTH_OK", "AUTH_FAIL", "BASE_SUMS"]),
  maxControlPayload: MAX_CONTROL_PAYLOAD,
  maxChunkLength: 0,
};
/** Authenticated server between batches: BATCH_BEGIN, or a HELLO for another migration. */
export const SERVER_IDLE: DecoderLimits = {
  accept: new Set<FrameKind>(["BATCH_BEGIN", "HELLO"]),
  maxControlPayload: MAX_CONTROL_PAYLOAD,
  maxChunkLength: 0,
};
/** Authenticated server on a connection whose HELLO asked for a tunnel: its channel. */
export const SERVER_TUNNEL: DecoderLimits = {
  accept: new Set<FrameKind>(["TUNNEL_OPEN"]),
  maxControlPayload: MAX_PREAUTH_PAYLOAD,
  maxChunkLength: 0,
};
/** Client of a tunnel after AUTH_OK: the destination's answer to TUNNEL_OPEN. */
export const CLIENT_TUNNEL: DecoderLimits = {
  accept: new Set<FrameKind>(["TUNNEL_OK", "TUNNEL_ERR"]),
  maxControlPayload: MAX_PREAUTH_PAYLOAD,
  maxChunkLength: 0,
};
/** Authenticated server inside a batch whose chunks are at most `chunkSizeBytes`. */
export function serverInBatch(chunkSizeBytes: number): DecoderLimits {
  return {
    accept: new Set<FrameKind>(["CHUNK", "BATCH_END"]),
    maxControlPayload: MAX_CONTROL_PAYLOAD,
    maxChunkLength: Math.min(chunkSizeBytes, MAX_CHUNK_LENGTH),
  };
}

/** What the data channel decodes: a control frame or a step of a CHUNK frame. */
export type FrameStep = Exclude<DecodeStep, { kind: "need-more" } | { kind: "violation" }>;

export type DecodeStep =
  | { kind: "need-more" }
  | { kind: "frame"; frame: ControlFrame }
  /** Call provideChunkBuffer() with at least header.length bytes, then next() again. */
  | { kind: "chunk-begin"; header: ChunkHeader }
  /**
   * `data` is the assembled logical chunk (undefined for an all-zero chunk, which has no bytes,
   * and for a compressed one, whose still-compressed segment bytes are `packed` instead: the
   * consumer unpacks them into the segments, see unpackSegments).
   */
  | { kind: "chunk"; header: ChunkHeader; data: Uint8Array | undefined; packed?: Uint8Array }
  | { kind: "violation"; message: string };

type State =
  | { at: "header" }
  | { at: "payload"; kind: FrameKind; header: RawHeader }
  | { at: "table"; header: RawHeader }
  | { at: "buffer"; chunk: ChunkHeader }
  | { at: "data"; chunk: ChunkHeader; target: Uint8Array; segment: number; done: number }
  | { at: "packed"; chunk: ChunkHeader; target: Uint8Array; done: number }
  | { at: "failed"; message: string };

/**
 * Incremental decoder for DWCP data channel v1 (an IncrementalDecoder of #common/secure-link, read
 * by its PullReader): push() whatever TCP delivered, call next() until it answers need-more.
 * Pure: no I/O, no clock. CHUNK frames are assembled straight into a buffer the consumer
 * provides (from its pool), so segment bytes are copied once and a peer can only make us
 * allocate what the current limits allow.
 */
export class FrameDecoder implements IncrementalDecoder<FrameStep> {
  private readonly queue = new ByteQueue();
  private state: State = { at: "header" };

  constructor(private limits: DecoderLimits) {}

  setLimits(limits: DecoderLimits): void {
    this.limits = limits;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.queue.length;
  }

  /**
   * Between frames, the bytes received after the last one, handed over (the decoder keeps none):
   * a tunnel's first raw bytes that arrived with its TUNNEL_OK.
   */
  takeRest(): Uint8Array {
    if (this.state.at !== "header")
      throw new InvariantViolationError("takeRest() inside a frame: only whole frames are decoded");
    return this.queue.take(this.queue.length);
  }

  /** True between frames: nothing of a frame has been consumed yet. */
  get atFrameBoundary(): boolean {
    return this.state.at === "header" && this.queue.length === 0;
  }

  push(bytes: Uint8Array): void {
    this.queue.push(bytes);
  }

  provideChunkBuffer(target: Uint8Array): void {
    if (this.state.at !== "buffer") throw new InvariantViolationError("no chunk is waiting for a buffer");
    const chunk = this.state.chunk;
    if (target.length < chunk.length) throw new RangeError("chunk buffer too small");
    for (const gap of gapsOf(chunk.segments, chunk.length)) {
      target.fill(0, gap.relOffset, gap.relOffset + gap.length);
    }
    this.state = { at: "data", chunk, target, segment: 0, done: 0 };
  }

  /**
   * Where the next payload bytes go when nothing is queued and a chunk segment is being filled:
   * a reader may then receive straight into `target[at, at+length)` and call advanceDirect(n),
   * saving the copy through push(). Undefined otherwise.
   */
  directTarget(): { target: Uint8Array; at: number; length: number } | undefined {
    if (this.queue.length > 0) return undefined;
    if (this.state.at === "packed")
      return { target: this.state.target, at: this.state.done, length: this.state.target.length - this.state.done };
    if (this.state.at !== "data") return undefined;
    const seg = this.state.chunk.segments[this.state.segment];
    if (seg === undefined) return undefined;
    return { target: this.state.target, at: seg.relOffset + this.state.done, length: seg.length - this.state.done };
  }

  /** `n` bytes were received into directTarget()'s range. */
  advanceDirect(n: number): void {
    const s = this.state;
    if (
      s.at === "packed" &&
      this.queue.length === 0 &&
      Number.isInteger(n) &&
      n >= 0 &&
      s.done + n <= s.target.length
    ) {
      s.done += n;
      return;
    }
    const seg = s.at === "data" && this.queue.length === 0 ? s.chunk.segments[s.segment] : undefined;
    if (s.at !== "data" || seg === undefined || !Number.isInteger(n) || n < 0 || s.done + n > seg.length) {
      throw new InvariantViolationError("advanceDirect outside a direct target");
    }
    s.done += n;
    if (s.done === seg.length) {
      s.segment += 1;
      s.done = 0;
    }
  }

  next(): DecodeStep {
    switch (this.state.at) {
      case "failed":
        return { kind: "violation", message: this.state.message };
      case "header":
        return this.readFrameHeader();
      case "payload":
        return this.readPayload(this.state.kind, this.state.header);
      case "table":
        return this.readTable(this.state.header);
      case "buffer":
        throw new InvariantViolationError("provideChunkBuffer() must be called after chunk-begin");
      case "data":
        return this.readChunkData(this.state);
      case "packed":
        return this.readPacked(this.state);
      default: {
        const never: never = this.state;
        return never;
      }
    }
  }

  private fail(message: string): DecodeStep {
    this.state = { at: "failed", message };
    return { kind: "violation", message };
  }

  private readFrameHeader(): DecodeStep {
    if (this.queue.length < HEADER_BYTES) {
      // Refuse a stranger (an HTTP probe, a port scan) as soon as its first bytes are wrong.
      for (let i = 0; i < Math.min(4, this.queue.length); i++) {
        if (this.queue.peekByte(i) !== MAGIC_BYTES[i]) return this.fail("bad magic: not a DWCP data channel");
      }
      return { kind: "need-more" };
    }
    const header = readHeader(this.queue.take(HEADER_BYTES));
    const kind = frameKindOf(header.code);
    const problem = headerProblem(header, kind, this.limits);
    if (problem !== undefined || kind === undefined) return this.fail(problem ?? "unknown frame type");
    this.state = kind === "CHUNK" ? { at: "table", header } : { at: "payload", kind, header };
    return this.next();
  }

  private readPayload(kind: FrameKind, header: RawHeader): DecodeStep {
    if (this.queue.length < header.payloadLength) return { kind: "need-more" };
    const payload = this.queue.take(header.payloadLength);
    const decoded = decodeControl(kind, header, payload);
    if (typeof decoded === "string") return this.fail(`${kind}: ${decoded}`);
    this.state = { at: "header" };
    return { kind: "frame", frame: decoded };
  }

  private readTable(header: RawHeader): DecodeStep {
    if ((header.flags & FLAG_BASE) !== 0) return this.readBase(header);
    const tableBytes = header.segmentCount * SEGMENT_ENTRY_BYTES;
    if (this.queue.length < tableBytes) return { kind: "need-more" };
    const table = this.queue.take(tableBytes);
    const view = new DataView(table.buffer, table.byteOffset, tableBytes);
    const segments: Segment[] = [];
    for (let i = 0; i < header.segmentCount; i++) {
      const at = i * SEGMENT_ENTRY_BYTES;
      segments.push({ relOffset: view.getUint32(at), length: view.getUint32(at + 4) });
    }
    const packed = (header.flags & (FLAG_LZ4 | FLAG_ZSTD)) !== 0;
    const dataBytes = segments.reduce((n, s) => n + s.length, 0);
    const problem = segmentTableProblem(
      segments,
      header.length,
      packed ? dataBytes : header.payloadLength - tableBytes,
    );
    if (problem !== undefined) return this.fail(`CHUNK: ${problem}`);
    const packedLength = header.payloadLength - tableBytes;
    if (packed && (packedLength === 0 || packedLength >= dataBytes)) {
      return this.fail(`CHUNK: ${packedLength} compressed bytes for ${dataBytes} bytes of segments`);
    }
    const chunk: ChunkHeader = {
      offset: header.offset,
      length: header.length,
      crc32c: header.crc32c,
      zero: (header.flags & FLAG_ZERO) !== 0,
      segments,
    };
    if (segments.length === 0) {
      this.state = { at: "header" };
      return { kind: "chunk", header: chunk, data: undefined };
    }
    if (packed) {
      // Bounded like a chunk buffer: less than the segments' bytes, which are <= maxChunkLength.
      chunk.packedLength = packedLength;
      chunk.codec = (header.flags & FLAG_ZSTD) !== 0 ? "zstd" : "lz4";
      this.state = { at: "packed", chunk, target: new Uint8Array(packedLength), done: 0 };
      return this.next();
    }
    this.state = { at: "buffer", chunk };
    return { kind: "chunk-begin", header: chunk };
  }

  /** A BASE chunk: its payload is the source chunk's BLAKE3, and it has no segments. */
  private readBase(header: RawHeader): DecodeStep {
    if (this.queue.length < BASE_DIGEST_BYTES) return { kind: "need-more" };
    const base = this.queue.take(BASE_DIGEST_BYTES).slice();
    this.state = { at: "header" };
    const chunk: ChunkHeader = {
      offset: header.offset,
      length: header.length,
      crc32c: header.crc32c,
      zero: false,
      segments: [],
      base,
    };
    return { kind: "chunk", header: chunk, data: undefined };
  }

  private readPacked(s: Extract<State, { at: "packed" }>): DecodeStep {
    const count = Math.min(s.target.length - s.done, this.queue.length);
    if (count > 0) {
      this.queue.copyInto(s.target, s.done, count);
      s.done += count;
    }
    if (s.done < s.target.length) return { kind: "need-more" };
    this.state = { at: "header" };
    return { kind: "chunk", header: s.chunk, data: undefined, packed: s.target };
  }

  private readChunkData(s: Extract<State, { at: "data" }>): DecodeStep {
    while (s.segment < s.chunk.segments.length) {
      const seg = s.chunk.segments[s.segment];
      if (seg === undefined) break;
      const count = Math.min(seg.length - s.done, this.queue.length);
      if (count === 0) return { kind: "need-more" };
      this.queue.copyInto(s.target, seg.relOffset + s.done, count);
      s.done += count;
      if (s.done === seg.length) {
        s.segment += 1;
        s.done = 0;
      }
    }
    this.state = { at: "header" };
    return { kind: "chunk", header: s.chunk, data: s.target.subarray(0, s.chunk.length) };
  }
}

/** Everything checkable from the 32 header bytes alone, before any payload is buffered. */
function headerProblem(h: RawHeader, kind: FrameKind | undefined, limits: DecoderLimits): string | undefined {
  if (h.magic !== MAGIC) return "bad magic: not a DWCP data channel";
  if (h.version !== PROTOCOL_VERSION) return `unsupported protocol version ${h.version}`;
  if (kind === undefined) return `unknown frame type ${h.code}`;
  if (!limits.accept.has(kind)) return `${kind} is not allowed here`;
  if (h.offset > Number.MAX_SAFE_INTEGER) return `${kind}: offset too large`;
  if (kind === "CHUNK") return chunkHeaderProblem(h, limits);
  const allowed =
    kind === "HELLO"
      ? FLAG_SEALED | FLAG_TUNNEL
      : kind === "AUTH_OK" || kind === "TUNNEL_OPEN" || kind === "TUNNEL_OK"
        ? FLAG_SEALED
        : 0;
  if ((h.flags & ~allowed) !== 0) return `${kind}: unexpected flags ${h.flags}`;
  if (h.payloadLength > limits.maxControlPayload) {
    return `${kind}: payload of ${h.payloadLength} bytes exceeds ${limits.maxControlPayload}`;
  }
  return undefined;
}

function chunkHeaderProblem(h: RawHeader, limits: DecoderLimits): string | undefined {
  if ((h.flags & ~(FLAG_ZERO | FLAG_LZ4 | FLAG_ZSTD | FLAG_BASE)) !== 0) return `CHUNK: unexpected flags ${h.flags}`;
  if ((h.flags & FLAG_BASE) !== 0) {
    if (h.flags !== FLAG_BASE) return "CHUNK: a BASE chunk carries no other flag";
    if (h.length === 0 || h.length > limits.maxChunkLength)
      return `CHUNK: length ${h.length} outside 1..${limits.maxChunkLength}`;
    if (h.segmentCount !== 0 || h.payloadLength !== BASE_DIGEST_BYTES)
      return `CHUNK: a BASE chunk carries no segments and a ${BASE_DIGEST_BYTES}-byte BLAKE3`;
    return undefined;
  }
  if ((h.flags & FLAG_LZ4) !== 0 && (h.flags & FLAG_ZSTD) !== 0) return "CHUNK: a chunk is packed by one codec";
  if ((h.flags & FLAG_ZERO) !== 0 && (h.flags & (FLAG_LZ4 | FLAG_ZSTD)) !== 0)
    return "CHUNK: a zero chunk carries nothing to compress";
  if (h.length === 0 || h.length > limits.maxChunkLength) {
    return `CHUNK: length ${h.length} outside 1..${limits.maxChunkLength}`;
  }
  const maxSegments = Math.ceil(h.length / SEGMENT_PAGE_BYTES);
  if (h.segmentCount > maxSegments) return `CHUNK: ${h.segmentCount} segments for ${h.length} bytes`;
  const tableBytes = h.segmentCount * SEGMENT_ENTRY_BYTES;
  if (h.payloadLength < tableBytes || h.payloadLength - tableBytes > h.length) {
    const fits = `${h.segmentCount} segments of a ${h.length}-byte chunk`;
    return `CHUNK: payload of ${h.payloadLength} bytes does not fit ${fits}`;
  }
  const zero = (h.flags & FLAG_ZERO) !== 0;
  if (zero !== (h.segmentCount === 0)) return "CHUNK: the ZERO flag must be set exactly when no segment is sent";
  return undefined;
}

const MAGIC_BYTES = [MAGIC >>> 24, (MAGIC >>> 16) & 0xff, (MAGIC >>> 8) & 0xff, MAGIC & 0xff];
const utf8 = new TextDecoder("utf-8", { fatal: true });

function parseJson(payload: Uint8Array): unknown {
  try {
    return JSON.parse(utf8.decode(payload)) as unknown;
  } catch {
    return undefined;
  }
}

function decodeHello(p: Uint8Array, sealed: boolean, tunnel: boolean): ControlFrame | string {
  const idLength = p[MAC_BYTES];
  if (idLength === undefined) return "truncated";
  const hostLength = p[MAC_BYTES + 1 + idLength];
  if (hostLength === undefined || p.length !== MAC_BYTES + 2 + idLength + hostLength) return "bad length";
  let fields: unknown;
  try {
    fields = {
      migrationId: utf8.decode(p.subarray(MAC_BYTES + 1, MAC_BYTES + 1 + idLength)),
      sourceHost: utf8.decode(p.subarray(MAC_BYTES + 2 + idLength)),
    };
  } catch {
    return "invalid UTF-8";
  }
  const parsed = Hello.safeParse(fields);
  if (!parsed.success) return "invalid migration id or source host";
  const hello = { kind: "HELLO" as const, ...parsed.data, mac: p.slice(0, MAC_BYTES) };
  return { ...hello, ...(sealed ? { sealed } : {}), ...(tunnel ? { tunnel } : {}) };
}

function decodeBaseSums(h: RawHeader, p: Uint8Array): ControlFrame | string {
  if (h.length === 0 || h.length > MAX_BASE_SUMS) return `names ${h.length} chunks, not 1..${MAX_BASE_SUMS}`;
  if (p.length !== h.length * BASE_SUM_BYTES) return "bad length";
  const view = new DataView(p.buffer, p.byteOffset, p.length);
  const sums = Array.from({ length: h.length }, (_, i): BaseSum => {
    const at = i * BASE_SUM_BYTES;
    const blake3 = Uint8Array.from(p.subarray(at + 4, at + BASE_SUM_BYTES));
    const crc32c = view.getUint32(at);
    return crc32c === 0 && blake3.every((b) => b === 0) ? "none" : { crc32c, blake3 };
  });
  return { kind: "BASE_SUMS", id: h.crc32c, offset: h.offset, sums };
}

function decodeControl(kind: FrameKind, h: RawHeader, p: Uint8Array): ControlFrame | string {
  const empty = p.length === 0 ? undefined : "unexpected payload";
  switch (kind) {
    case "CHALLENGE":
      return p.length === NONCE_BYTES ? { kind, nonce: p.slice() } : "bad nonce length";
    case "HELLO":
      return decodeHello(p, (h.flags & FLAG_SEALED) !== 0, (h.flags & FLAG_TUNNEL) !== 0);
    case "AUTH_OK":
      return empty ?? ((h.flags & FLAG_SEALED) === 0 ? { kind } : { kind, sealed: true });
    case "BATCH_OK":
      return empty ?? { kind };
    case "CHUNK_OK":
      return empty ?? { kind, offset: h.offset };
    case "BATCH_END":
      return empty ?? { kind, chunkCount: h.length };
    case "AUTH_FAIL": {
      const r = AuthFailPayload.safeParse(parseJson(p));
      return r.success ? { kind, message: r.data.message } : "invalid payload";
    }
    case "BATCH_BEGIN": {
      const r = BatchBegin.safeParse(parseJson(p));
      return r.success ? { kind, begin: r.data } : `invalid payload: ${r.error.issues[0]?.message ?? "?"}`;
    }
    case "CHUNK_ERR":
    case "BATCH_ERR": {
      const r = WireFailure.safeParse(parseJson(p));
      if (!r.success) return "invalid payload";
      return kind === "CHUNK_ERR" ? { kind, offset: h.offset, failure: r.data } : { kind, failure: r.data };
    }
    case "TUNNEL_OPEN": {
      const r = TunnelOpen.safeParse(parseJson(p));
      if (!r.success) return "invalid tunnel channel";
      return {
        kind,
        channel: r.data.channel,
        ...(r.data.codec === undefined ? {} : { codec: r.data.codec }),
        ...((h.flags & FLAG_SEALED) === 0 ? {} : { sealed: true }),
      };
    }
    case "TUNNEL_OK":
      return empty ?? ((h.flags & FLAG_SEALED) === 0 ? { kind } : { kind, sealed: true });
    case "TUNNEL_ERR": {
      const r = AuthFailPayload.safeParse(parseJson(p));
      return r.success ? { kind, message: r.data.message } : "invalid payload";
    }
    case "RESUME_AT": {
      if (p.length !== h.length * 4) return "bad length";
      const view = new DataView(p.buffer, p.byteOffset, p.length);
      return { kind, crc32c: Array.from({ length: h.length }, (_, i) => view.getUint32(i * 4)) };
    }
    case "BASE_SUMS":
      return decodeBaseSums(h, p);
    case "CHUNK":
      return "CHUNK is not a control frame";
    default: {
      const never: never = kind;
      return never;
    }
  }
}
