/**
 * Socket tuning for long links, decided from what the kernel allows and what the link measured.
 * Pure: infra/data-channel/socket-tuning.ts reads the sysctls and applies the plan.
 */

/** The kernel's limits and choices (net.core.*mem_max, net.ipv4.tcp_*mem, congestion controls). */
export interface KernelNet {
  /** net.core.wmem_max / rmem_max: the largest SO_SNDBUF / SO_RCVBUF a process may ask for. */
  wmemMax: number;
  rmemMax: number;
  /** Third field of net.ipv4.tcp_wmem / tcp_rmem: how far autotuning grows a socket's buffer. */
  tcpWmemMax: number;
  tcpRmemMax: number;
  /** net.ipv4.tcp_available_congestion_control. */
  available: readonly string[];
  /** net.ipv4.tcp_allowed_congestion_control: what an unprivileged process may set. */
  allowed: readonly string[];
}

export interface TuningPlan {
  /** SO_SNDBUF / SO_RCVBUF to set; undefined: leave autotuning on (it reaches the BDP). */
  sndbuf: number | undefined;
  rcvbuf: number | undefined;
  /** TCP_CONGESTION to ask for; undefined: keep the system default. */
  congestion: string | undefined;
  /** The bandwidth-delay product the plan was sized for, bytes. */
  bdpBytes: number;
}

/** Congestion controls in order of preference: BBR keeps a lossy long link full, CUBIC does not. */
export const CONGESTION_PREFERENCE = ["bbr", "cubic"] as const;

/** Rate assumed when the migration has no bandwidth limit: a 10 Gbit/s link. */
export const ASSUMED_LINK_BYTES_PER_SEC = 1_250_000_000;

/**
 * The kernel charges about twice the payload to a socket buffer (skb overhead), and reports an
 * explicit SO_SNDBUF doubled: to keep `bdp` bytes in flight a buffer needs 2 × bdp of memory.
 *
 * Autotuning grows buffers up to tcp_wmem/tcp_rmem's maximum, which is better than any fixed size
 * (it starts small and follows the window), so a size is set only where the BDP needs more than
 * autotuning can reach; then it is capped by net.core.*mem_max (which the kernel doubles).
 */
export function planTuning(k: KernelNet, rttUs: number | undefined, rateBytesPerSec: number | undefined): TuningPlan {
  const rate = rateBytesPerSec ?? ASSUMED_LINK_BYTES_PER_SEC;
  const bdpBytes = Math.ceil((rate * (rttUs ?? 0)) / 1e6);
  const need = 2 * bdpBytes;
  const size = (autoMax: number, coreMax: number): number | undefined =>
    need > autoMax && 2 * coreMax > autoMax ? Math.min(need, coreMax) : undefined;
  return {
    sndbuf: size(k.tcpWmemMax, k.wmemMax),
    rcvbuf: size(k.tcpRmemMax, k.rmemMax),
    congestion: chooseCongestion(k),
    bdpBytes,
  };
}

/**
 * The first preferred algorithm the kernel has and allows unprivileged processes to set; else the
 * first it has (a process with CAP_NET_ADMIN may set any); else none (the system default).
 */
export function chooseCongestion(k: Pick<KernelNet, "available" | "allowed">): string | undefined {
  return (
    CONGESTION_PREFERENCE.find((c) => k.available.includes(c) && k.allowed.includes(c)) ??
    CONGESTION_PREFERENCE.find((c) => k.available.includes(c))
  );
}
