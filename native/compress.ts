// Adaptive chunk compression with LZ4 through lz4-napi (N-API, prebuilt binaries published as
// npm packages, so it installs offline from the registry alone). The package is loaded lazily
// and is optional: without it every chunk is stored uncompressed and decompressChunk of an lz4
// chunk fails with CompressionUnavailableError.
import { CompressedChunkCorruptError, CompressionUnavailableError, InvalidArgumentError } from "./errors.js";
import { assertBytes } from "./validate.js";

// A plain string keeps the import dynamic: the build does not need the package to exist.
const LZ4_PACKAGE: string = "lz4-napi";

interface Lz4 {
  compress(data: Uint8Array): Promise<Buffer>;
  uncompress(data: Uint8Array): Promise<Buffer>;
}

function asLz4(mod: unknown): Lz4 | undefined {
  const m = (mod as { default?: unknown } | null)?.default ?? mod;
  const { compress, uncompress } = (m ?? {}) as Partial<Record<keyof Lz4, unknown>>;
  return typeof compress === "function" && typeof uncompress === "function" ? (m as Lz4) : undefined;
}

let lz4: Promise<Lz4 | undefined> | undefined;

function loadLz4(): Promise<Lz4 | undefined> {
  lz4 ??= import(LZ4_PACKAGE).then(asLz4, () => undefined);
  return lz4;
}

export type Codec = "lz4" | "none";

export interface CompressedChunk {
  codec: Codec;
  /** The compressed bytes, or the input itself when codec is "none". */
  data: Uint8Array;
  rawLength: number;
}

export interface CompressOptions {
  /** Bytes compressed first to decide whether the chunk is worth compressing. Default 65536. */
  sampleBytes?: number;
  /** Least saving, as a fraction of the input size, for compression to be kept. Default 0.1. */
  minSaving?: number;
}

/** The codec compressChunk will use: "none" if lz4-napi is not installed. */
export async function compressionCodec(): Promise<Codec> {
  return (await loadLz4()) ? "lz4" : "none";
}

function stored(buf: Uint8Array): CompressedChunk {
  return { codec: "none", data: buf, rawLength: buf.length };
}

/**
 * Compresses a chunk with LZ4 unless it does not pay: the first sampleBytes are compressed
 * first, and a sample (or a whole chunk) that shrinks by less than minSaving is stored as is.
 */
export async function compressChunk(buf: Uint8Array, options: CompressOptions = {}): Promise<CompressedChunk> {
  assertBytes("buf", buf);
  const sampleBytes = options.sampleBytes ?? 65536;
  const minSaving = options.minSaving ?? 0.1;
  if (!Number.isInteger(sampleBytes) || sampleBytes <= 0) {
    throw new InvalidArgumentError(`sampleBytes must be a positive integer (bytes), got ${sampleBytes}`);
  }
  if (!(minSaving >= 0 && minSaving < 1))
    throw new InvalidArgumentError(`minSaving must be in [0, 1), got ${minSaving}`);
  const codec = await loadLz4();
  if (codec === undefined || buf.length === 0) return stored(buf);
  const pays = (input: number, output: number): boolean => output <= input * (1 - minSaving);
  const sample = buf.subarray(0, sampleBytes);
  const packedSample = await codec.compress(sample);
  if (!pays(sample.length, packedSample.length)) return stored(buf);
  const packed = sample.length === buf.length ? packedSample : await codec.compress(buf);
  return pays(buf.length, packed.length) ? { codec: "lz4", data: packed, rawLength: buf.length } : stored(buf);
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

export async function decompressChunk(chunk: CompressedChunk): Promise<Uint8Array> {
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
    out = await codec.uncompress(chunk.data);
  } catch (err) {
    throw new CompressedChunkCorruptError("lz4 chunk does not decompress", { cause: err });
  }
  if (out.length !== chunk.rawLength) {
    throw new CompressedChunkCorruptError(`lz4 chunk decompressed to ${out.length} bytes, expected ${chunk.rawLength}`);
  }
  return out;
}
