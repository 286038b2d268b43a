// Per-chunk compression. LZ4 through lz4-napi (N-API, prebuilt binaries published as npm
// packages, loaded lazily and optional) and zstd through the native module's libzstd binding
// (native/src/zstd_codec.cc). Without a codec's implementation, compressChunk stores chunks as is
// and decompressChunk of such a chunk fails with CompressionUnavailableError.
//
// Both decoders are bounded by the chunk's raw length, which the caller has bounded: an LZ4
// block's size prefix and a zstd frame's declared content size must equal it before a byte is
// decoded, and the zstd decoder writes into a buffer of exactly that size.
import { CompressedChunkCorruptError, CompressionUnavailableError, InvalidArgumentError } from "./errors.js";
import type { NativeBinding } from "./loader.js";
import { assertBytes } from "./validate.js";

// A plain string keeps the import dynamic: the build does not need the package to exist.
const LZ4_PACKAGE: string = "lz4-napi";

/**
 * lz4-napi's synchronous calls, on purpose. Its asynchronous ones allocate each output on a libuv
 * pool thread from the package's own allocator (mimalloc), and the output is freed on the main
 * thread when the Buffer is collected: memory freed across threads that way is not reused, so a
 * receiver decompressing 4 MiB chunks grew by about their size each (a 1.43 GiB migration took a
 * receiving mover to 800 MiB RSS, with V8's heap at 25 MiB and external memory under 100 MiB).
 * Allocated and freed on one thread, the same buffers are reused: a 4 MiB chunk costs about 2 ms
 * to compress and 5 ms to decompress on the event loop, far below what it costs to move.
 */
interface Lz4 {
  compressSync(data: Buffer): Buffer;
  uncompressSync(data: Uint8Array): Buffer;
}

function asLz4(mod: unknown): Lz4 | undefined {
  const m = (mod as { default?: unknown } | null)?.default ?? mod;
  const { compressSync, uncompressSync } = (m ?? {}) as Partial<Record<keyof Lz4, unknown>>;
  return typeof compressSync === "function" && typeof uncompressSync === "function" ? (m as Lz4) : undefined;
}

/** `data` as a Buffer over the same memory (lz4-napi's compressSync takes Buffers only). */
const asBuffer = (data: Uint8Array): Buffer =>
  Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);

let lz4: Promise<Lz4 | undefined> | undefined;

function loadLz4(): Promise<Lz4 | undefined> {
  lz4 ??= import(LZ4_PACKAGE).then(asLz4, () => undefined);
  return lz4;
}

type Zstd = Pick<NativeBinding, "zstdPackAsync" | "zstdUnpackAsync">;
let zstd: Zstd | undefined;

/** Called once by native/index.ts with the loaded binding (undefined: no zstd). */
export function installZstd(binding: Partial<Zstd> | undefined): void {
  const { zstdPackAsync, zstdUnpackAsync } = binding ?? {};
  zstd =
    typeof zstdPackAsync === "function" && typeof zstdUnpackAsync === "function"
      ? { zstdPackAsync, zstdUnpackAsync }
      : undefined;
}

export type Codec = "lz4" | "zstd" | "none";

/** zstd levels a caller may ask for: negative are zstd's fast levels. */
export const ZSTD_MIN_LEVEL = -7;
export const ZSTD_MAX_LEVEL = 19;

export interface CompressedChunk<C extends Codec = Codec> {
  codec: C;
  /** The compressed bytes, or the input itself when codec is "none". */
  data: Uint8Array;
  rawLength: number;
}

export interface CompressOptions<C extends Exclude<Codec, "none"> = "lz4"> {
  /** The codec to try. Default "lz4". */
  codec?: C;
  /** zstd level (ZSTD_MIN_LEVEL..ZSTD_MAX_LEVEL). Default 1. */
  level?: number;
  /**
   * Bytes compressed first to decide whether the chunk is worth compressing, taken as
   * SAMPLE_PIECES pieces spread evenly over the chunk. Default 65536.
   */
  sampleBytes?: number;
  /** Least saving, as a fraction of the input size, for compression to be kept. Default 0.1. */
  minSaving?: number;
}

/** The codec compressChunk will use for `wanted`: "none" if its implementation is missing. */
export async function compressionCodec(wanted: Exclude<Codec, "none"> = "lz4"): Promise<Codec> {
  if (wanted === "zstd") return zstd === undefined ? "none" : "zstd";
  return (await loadLz4()) ? "lz4" : "none";
}

function stored(buf: Uint8Array): CompressedChunk<"none"> {
  return { codec: "none", data: buf, rawLength: buf.length };
}

/** Compresses `data`; undefined when it did not compress. lz4's answers at once (see Lz4). */
type Packer = (data: Uint8Array) => Promise<Uint8Array | undefined> | Uint8Array;

async function packerFor(codec: Exclude<Codec, "none">, level: number): Promise<Packer | undefined> {
  if (codec === "zstd") {
    const z = zstd;
    return z === undefined ? undefined : async (data) => (await z.zstdPackAsync(data, level)) ?? undefined;
  }
  const l = await loadLz4();
  return l === undefined ? undefined : (data) => l.compressSync(asBuffer(data));
}

function checkOptions(sampleBytes: number, minSaving: number, level: number): void {
  if (!Number.isInteger(sampleBytes) || sampleBytes <= 0) {
    throw new InvalidArgumentError(`sampleBytes must be a positive integer (bytes), got ${sampleBytes}`);
  }
  if (!(minSaving >= 0 && minSaving < 1))
    throw new InvalidArgumentError(`minSaving must be in [0, 1), got ${minSaving}`);
  if (!Number.isInteger(level) || level < ZSTD_MIN_LEVEL || level > ZSTD_MAX_LEVEL) {
    throw new InvalidArgumentError(`level must be an integer in ${ZSTD_MIN_LEVEL}..${ZSTD_MAX_LEVEL}, got ${level}`);
  }
}

/** Pieces a chunk's sample is made of (see sampleOf). */
export const SAMPLE_PIECES = 4;

/**
 * sampleBytes of `buf` in SAMPLE_PIECES equal pieces spread evenly over it (the first at its
 * start), copied into one buffer; `buf` itself when it is no longer than sampleBytes. A disk
 * image's chunk often starts in one kind of data and goes on in another (a compressed package,
 * then text and binaries): a sample of its first bytes alone stored such chunks as they were,
 * 6% more bytes for a Debian rootfs image with zstd.
 */
export function sampleOf(buf: Uint8Array, sampleBytes: number): Uint8Array {
  if (buf.length <= sampleBytes) return buf;
  const piece = Math.ceil(sampleBytes / SAMPLE_PIECES);
  const stride = Math.floor((buf.length - piece) / (SAMPLE_PIECES - 1));
  const sample = new Uint8Array(piece * SAMPLE_PIECES);
  for (let i = 0; i < SAMPLE_PIECES; i++) sample.set(buf.subarray(i * stride, i * stride + piece), i * piece);
  return sample;
}

/**
 * Compresses a chunk unless it does not pay: a sample of sampleBytes spread over the chunk
 * (sampleOf) is compressed first, and a sample (or a whole chunk) that shrinks by less than
 * minSaving is stored as is. Compression runs off the event loop for zstd (the native module's
 * pool), on it for lz4 (see Lz4).
 */
export async function compressChunk<C extends Exclude<Codec, "none"> = "lz4">(
  buf: Uint8Array,
  options: CompressOptions<C> = {},
): Promise<CompressedChunk<C | "none">> {
  assertBytes("buf", buf);
  const sampleBytes = options.sampleBytes ?? 65536;
  const minSaving = options.minSaving ?? 0.1;
  const level = options.level ?? 1;
  checkOptions(sampleBytes, minSaving, level);
  const codec = options.codec ?? ("lz4" as C);
  const pack = await packerFor(codec, level);
  if (pack === undefined || buf.length === 0) return stored(buf);
  const pays = (input: number, output: number): boolean => output <= input * (1 - minSaving);
  const sample = sampleOf(buf, sampleBytes);
  const packedSample = await pack(sample);
  if (packedSample === undefined || !pays(sample.length, packedSample.length)) return stored(buf);
  const packed = sample === buf ? packedSample : await pack(buf);
  return packed !== undefined && pays(buf.length, packed.length)
    ? { codec, data: packed, rawLength: buf.length }
    : stored(buf);
}

/** Bytes of the little-endian size an LZ4 block of lz4-napi starts with. */
const LZ4_SIZE_PREFIX_BYTES = 4;

/**
 * The size an lz4 block declares it decompresses to. lz4-napi allocates an output buffer of
 * exactly this size before it decodes a byte, so it is checked against the length the frame
 * carrying the chunk announced (`rawLength`, which the caller bounds) before anything else: a
 * block that claims 1 GiB is refused without a byte of that gigabyte being allocated.
 */
export function lz4DeclaredLength(data: Uint8Array): number | undefined {
  if (data.length < LZ4_SIZE_PREFIX_BYTES) return undefined;
  return (data[0]! | (data[1]! << 8) | (data[2]! << 16)) + data[3]! * 0x1000000;
}

/**
 * Decompresses a chunk to exactly rawLength bytes (into `into` for zstd when given; its length
 * must be rawLength). A chunk that declares another size, or does not decode to it, fails with
 * CompressedChunkCorruptError.
 */
export async function decompressChunk(chunk: CompressedChunk, into?: Uint8Array): Promise<Uint8Array> {
  assertBytes("chunk.data", chunk.data);
  if (chunk.codec === "none") {
    if (chunk.data.length !== chunk.rawLength) {
      throw new CompressedChunkCorruptError(`chunk has ${chunk.data.length} bytes, expected ${chunk.rawLength}`);
    }
    return chunk.data;
  }
  if (!Number.isSafeInteger(chunk.rawLength) || chunk.rawLength < 0) {
    throw new InvalidArgumentError(`rawLength must be a non-negative integer (bytes), got ${chunk.rawLength}`);
  }
  return chunk.codec === "zstd" ? unzstd(chunk, into) : unlz4(chunk);
}

async function unzstd(chunk: CompressedChunk, into: Uint8Array | undefined): Promise<Uint8Array> {
  if (zstd === undefined) {
    throw new CompressionUnavailableError("a zstd chunk needs the native module: build it (see native/README.md)");
  }
  if (into !== undefined && into.length !== chunk.rawLength) {
    throw new InvalidArgumentError(`into must have rawLength (${chunk.rawLength}) bytes, got ${into.length}`);
  }
  const out = into ?? Buffer.allocUnsafe(chunk.rawLength);
  try {
    await zstd.zstdUnpackAsync(chunk.data, out);
  } catch (err) {
    throw new CompressedChunkCorruptError(
      `zstd chunk does not decompress to ${chunk.rawLength} bytes: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  return out;
}

async function unlz4(chunk: CompressedChunk): Promise<Uint8Array> {
  const declared = lz4DeclaredLength(chunk.data);
  if (declared !== chunk.rawLength) {
    throw new CompressedChunkCorruptError(
      `lz4 chunk declares ${declared ?? "no"} decompressed bytes, expected ${chunk.rawLength}; not decompressed`,
    );
  }
  const codec = await loadLz4();
  if (codec === undefined) {
    throw new CompressionUnavailableError(
      `an lz4 chunk needs the ${LZ4_PACKAGE} package: install it (see native/README.md)`,
    );
  }
  let out: Buffer;
  try {
    out = codec.uncompressSync(chunk.data);
  } catch (err) {
    throw new CompressedChunkCorruptError("lz4 chunk does not decompress", { cause: err });
  }
  if (out.length !== chunk.rawLength) {
    throw new CompressedChunkCorruptError(`lz4 chunk decompressed to ${out.length} bytes, expected ${chunk.rawLength}`);
  }
  return out;
}
