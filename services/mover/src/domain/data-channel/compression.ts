/**
 * Which codec and level a batch's chunks are compressed with, from the migration's mode, the
 * link's rate and the CPU the sender can spare. Pure: infra/data-channel measures the inputs.
 *
 * A codec is worth what it delivers: the logical bytes per second that reach the destination are
 * the smaller of what the compressor produces (its speed per core times the cores it gets) and
 * what the link carries times the codec's ratio. Every candidate is scored so, and the best wins;
 * a tie keeps the cheaper codec. On a 10 Gbit/s link with 2 busy cores that is none or LZ4; at
 * 200 Mbit/s with a core to spare, zstd at the level that still keeps the link full.
 */
import type { CompressionMode } from "#schemas/index.js";
import type { PackedCodec } from "./frames.js";

export interface CompressionChoice {
  codec: PackedCodec | "none";
  /** zstd level; 0 for the others. */
  level: number;
}

export interface CompressionInputs {
  mode: CompressionMode;
  /** The link's rate in bytes/s (the bandwidth limit or a measurement); undefined: not known. */
  linkBytesPerSec: number | undefined;
  /** The link's smallest round trip, µs; undefined: not known. */
  rttUs: number | undefined;
  /** Cores the compressor may use: online cores less the 1-minute load, at least a quarter. */
  spareCores: number;
  /** Which codecs this process has. */
  available: { lz4: boolean; zstd: boolean };
}

/**
 * Speed of one core (logical bytes/s in) and the ratio (logical / compressed) each candidate
 * reached through compressChunk on a VM disk image's chunks with data (a Debian rootfs in ext4,
 * 4 MiB chunks, chunks that do not pay stored as they are), one thread, best of 3, on a 2 vCPU
 * AMD EPYC. The ratios are what the choice depends on most, and they are a disk's, not random
 * data's: incompressible chunks are sent as they are whatever the choice (see compressChunk).
 */
export const CODEC_PROFILES: readonly (CompressionChoice & { bytesPerSecPerCore: number; ratio: number })[] = [
  { codec: "none", level: 0, bytesPerSecPerCore: Number.POSITIVE_INFINITY, ratio: 1 },
  { codec: "lz4", level: 0, bytesPerSecPerCore: 467e6, ratio: 2.09 },
  { codec: "zstd", level: -1, bytesPerSecPerCore: 499e6, ratio: 2.33 },
  { codec: "zstd", level: 1, bytesPerSecPerCore: 467e6, ratio: 2.61 },
  { codec: "zstd", level: 3, bytesPerSecPerCore: 289e6, ratio: 2.86 },
  { codec: "zstd", level: 6, bytesPerSecPerCore: 102e6, ratio: 2.97 },
];

/**
 * How much more a candidate must deliver than the best so far to be chosen: cheaper candidates
 * come first and win ties. Small, because on a link-bound transfer every byte less is time
 * saved (zstd 6 over 3 saves 4% of the bytes on a disk image), while a candidate the spare CPU
 * cannot keep at the link's rate already scores lower.
 */
export const BETTER_BY = 1.02;

/** Round trips below this are a local network: assume the fast link of LOCAL_LINK_BYTES_PER_SEC. */
export const LOCAL_RTT_US = 2000;
/** A local link whose rate is not known: 10 Gbit/s. */
export const LOCAL_LINK_BYTES_PER_SEC = 1.25e9;
/** A WAN link whose rate is not known yet: 1 Gbit/s (LZ4 or zstd's fastest until measured). */
export const WAN_LINK_BYTES_PER_SEC = 125e6;
/** Least share of a core assumed spare on a loaded machine: compression still runs, slowly. */
export const MIN_SPARE_CORES = 0.25;

/** Logical bytes/s a candidate delivers over `link` with `cores` to compress on. */
function delivered(p: (typeof CODEC_PROFILES)[number], link: number, cores: number): number {
  return Math.min(p.bytesPerSecPerCore * cores, link * p.ratio);
}

export function chooseCompression(i: CompressionInputs): CompressionChoice {
  switch (i.mode) {
    case "none":
      return { codec: "none", level: 0 };
    case "lz4":
      return i.available.lz4 ? { codec: "lz4", level: 0 } : { codec: "none", level: 0 };
    case "zstd":
      return i.available.zstd ? { codec: "zstd", level: 1 } : { codec: "none", level: 0 };
    case "auto":
      return chooseAuto(i);
    default: {
      const never: never = i.mode;
      return never;
    }
  }
}

function chooseAuto(i: CompressionInputs): CompressionChoice {
  const link =
    i.linkBytesPerSec ??
    (i.rttUs !== undefined && i.rttUs >= LOCAL_RTT_US ? WAN_LINK_BYTES_PER_SEC : LOCAL_LINK_BYTES_PER_SEC);
  const cores = Math.max(MIN_SPARE_CORES, i.spareCores);
  let best: CompressionChoice = { codec: "none", level: 0 };
  let bestRate = delivered(CODEC_PROFILES[0]!, link, cores);
  for (const p of CODEC_PROFILES) {
    if (p.codec !== "none" && !i.available[p.codec]) continue;
    const rate = delivered(p, link, cores);
    if (rate > bestRate * BETTER_BY) {
      best = { codec: p.codec, level: p.level };
      bestRate = rate;
    }
  }
  return best;
}

/**
 * The link rate to choose a codec by: the bandwidth limit, or the fastest rate a batch to the
 * destination reached if lower or there is no limit. A batch's rate is the link's only where the
 * link held it back; to a destination on this host's loopback no link does (the bytes never leave
 * the host, and a batch there goes at the movers' own CPU and disk pace, which a codec only
 * slows), so there only a limit counts. Undefined: not known (chooseCompression then goes by RTT).
 */
export function linkRateFor(o: {
  limitBytesPerSec: number | undefined;
  measuredBytesPerSec: number | undefined;
  loopback: boolean;
}): number | undefined {
  const { limitBytesPerSec: limit, measuredBytesPerSec: measured } = o;
  if (o.loopback || measured === undefined) return limit;
  return limit === undefined ? measured : Math.min(limit, measured);
}

/** Cores left for compression: online cores less the 1-minute load average, at least MIN_SPARE_CORES. */
export function spareCores(cores: number, load1: number): number {
  return Math.max(MIN_SPARE_CORES, Math.min(cores, cores - load1));
}
