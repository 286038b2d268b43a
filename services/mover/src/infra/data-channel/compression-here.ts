import { availableParallelism, loadavg } from "node:os";
import { compressionCodec } from "#native/index.js";
import type { CompressionMode } from "#schemas/index.js";
import { chooseCompression, spareCores, type CompressionChoice } from "../../domain/data-channel/compression.js";

/**
 * The codec for `mode` on this host now: chooseCompression with the codecs this process has and
 * the cores it can spare (online cores less the 1-minute load). `link` is what the caller knows
 * of the link: its rate in bytes/s (undefined: not known) and its smallest RTT in µs.
 */
export async function compressionHere(
  mode: CompressionMode,
  link: { bytesPerSec: number | undefined; rttUs: number | undefined },
): Promise<CompressionChoice> {
  const [lz4, zstd] = await Promise.all([compressionCodec("lz4"), compressionCodec("zstd")]);
  return chooseCompression({
    mode,
    linkBytesPerSec: link.bytesPerSec,
    rttUs: link.rttUs,
    spareCores: spareCores(availableParallelism(), loadavg()[0] ?? 0),
    available: { lz4: lz4 === "lz4", zstd: zstd === "zstd" },
  });
}
