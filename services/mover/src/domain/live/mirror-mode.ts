/**
 * How the disk mirror runs, from the link its NBD tunnel crosses. Pure: infra/vm/live.ts measures
 * the tunnel (its round trip, whether it compresses) and sends the plan to QEMU.
 *
 * Copy mode. In the background (QEMU's default) the mirror reaches READY only at a moment when no
 * copy is in flight and no block is dirty; across a WAN a copy takes at least a round trip, and a
 * guest that writes every few milliseconds has always dirtied another block by then, so the
 * mirror never gets there (a counting guest stayed 130 KB short of READY for minutes on a 50 ms
 * link). Write-blocking mirrors each guest write before the guest sees it complete, so only the
 * first pass has to finish.
 *
 * Granularity and buffer. QEMU's mirror keeps at most 16 copies in flight, each one run of data
 * (a hole between two runs ends a copy), so on a fragmented disk it has a few MiB in flight per
 * round trip: about 8 MiB of a disk with a 256 KiB hole in every MiB, 65 MB/s across 50 ms
 * whatever the link. With 4 MiB granules each copy covers 4 MiB, holes travelling as zeros; that
 * pays only where the tunnel compresses (zeros shrink to almost nothing), and costs a guest write
 * between two copies a 4 MiB re-copy instead of 64 KiB, also compressed.
 */
import { LOCAL_RTT_US } from "../data-channel/compression.js";

export type MirrorCopyMode = "background" | "write-blocking";

export interface MirrorPlan {
  copyMode: MirrorCopyMode;
  /** The dirty bitmap's granule (QEMU's `granularity`); undefined: QEMU's default (64 KiB for raw). */
  granularityBytes?: number;
  /** Bytes the mirror may have in flight (QEMU's `buf-size`); undefined: QEMU's default (16 MiB). */
  bufSizeBytes?: number;
}

/** Granule of a mirror through a compressing WAN tunnel. */
export const WAN_MIRROR_GRANULARITY = 4 * 1024 * 1024;
/** In-flight bytes of such a mirror: 16 granules, QEMU's limit of copies in flight. */
export const WAN_MIRROR_BUFFER = 16 * WAN_MIRROR_GRANULARITY;

export function planMirror(o: {
  /** The migration's `writeBlocking` option; undefined: chosen from the link. */
  writeBlocking: boolean | undefined;
  /** The NBD tunnel's round trip, µs; undefined: not known (treated as local). */
  nbdRttUs: number | undefined;
  /** The NBD tunnel compresses what the source sends. */
  compressed: boolean;
}): MirrorPlan {
  const wan = o.nbdRttUs !== undefined && o.nbdRttUs >= LOCAL_RTT_US;
  const copyMode = (o.writeBlocking ?? wan) ? "write-blocking" : "background";
  return wan && o.compressed
    ? { copyMode, granularityBytes: WAN_MIRROR_GRANULARITY, bufSizeBytes: WAN_MIRROR_BUFFER }
    : { copyMode };
}
