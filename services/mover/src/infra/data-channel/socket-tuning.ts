import { readFileSync } from "node:fs";
import { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import type { Logger } from "#common/logger.js";
import { socketFd, zeroCopy } from "#native/index.js";
import { planTuning, type KernelNet } from "../../domain/data-channel/link-tuning.js";

/** What a data socket ended up with (buffer sizes as the kernel reports them). */
export interface SocketTuning {
  congestion: string | undefined;
  sndbuf: number;
  rcvbuf: number;
  /** Explicit sizes set (false: the kernel's autotuning sizes that direction). */
  sndbufSet: boolean;
  rcvbufSet: boolean;
  /** The connection's smallest RTT so far (its smoothed one where the kernel has no minimum), µs. */
  rttUs: number | undefined;
  bdpBytes: number;
  /** TCP_USER_TIMEOUT set on the socket, ms (undefined: the kernel's retransmission limits). */
  userTimeoutMs: number | undefined;
}

/** The TCP fd under a socket; a TLS socket wraps the TCP one (its `_parent`). */
function tcpFd(socket: Socket): number | undefined {
  return socketFd(socket) ?? (socket instanceof TLSSocket ? parentOf(socket) : undefined);
}

function parentOf(socket: TLSSocket): number | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return parent instanceof Socket ? socketFd(parent) : undefined;
}

let kernel: KernelNet | undefined;
/** A refused congestion control is logged once per process, not per socket. */
let refusalLogged = false;

function sysctl(name: string): string {
  try {
    return readFileSync(`/proc/sys/${name.replaceAll(".", "/")}`, "utf8").trim();
  } catch {
    return "";
  }
}

const int = (s: string, fallback: number): number => {
  const n = Number.parseInt(s, 10);
  return Number.isFinite(n) && n > 0 ? n : fallback;
};
const third = (s: string): string => s.split(/\s+/)[2] ?? "";
const words = (s: string): string[] => s.split(/\s+/).filter((w) => w !== "");

/** The kernel's socket-buffer limits and congestion controls, read once per process. */
export function kernelNet(): KernelNet {
  kernel ??= {
    wmemMax: int(sysctl("net.core.wmem_max"), 212_992),
    rmemMax: int(sysctl("net.core.rmem_max"), 212_992),
    tcpWmemMax: int(third(sysctl("net.ipv4.tcp_wmem")), 4 * 1024 * 1024),
    tcpRmemMax: int(third(sysctl("net.ipv4.tcp_rmem")), 6 * 1024 * 1024),
    available: words(sysctl("net.ipv4.tcp_available_congestion_control")),
    allowed: words(sysctl("net.ipv4.tcp_allowed_congestion_control")),
  };
  return kernel;
}

/**
 * Tune a connected data socket for its link: the congestion control (BBR where the kernel has and
 * allows it, else CUBIC, else the default), and buffers sized to the bandwidth-delay product
 * (the connection's RTT from TCP_INFO × the migration's bandwidth limit, or an assumed 10 Gbit/s)
 * where autotuning could not reach it, and `opts.userTimeoutMs` as TCP_USER_TIMEOUT. Without the
 * native module nothing is set (Node has no setsockopt for these) and undefined is returned.
 * Never throws: tuning is an optimisation.
 */
export function tuneSocket(
  socket: Socket,
  rateBytesPerSec: number | undefined,
  log: Logger,
  opts: { userTimeoutMs?: number } = {},
): SocketTuning | undefined {
  const fd = tcpFd(socket);
  if (!zeroCopy.available || fd === undefined) return undefined;
  try {
    const measured = zeroCopy.tuneSocket(fd, {});
    // The smallest RTT, not the smoothed one: early samples carry delayed ACKs and, on a busy
    // host, scheduling delay (a loaded loopback shows a smoothed RTT of several ms).
    const rttUs = measured.minRttUs ?? measured.rttUs;
    const plan = planTuning(kernelNet(), rttUs, rateBytesPerSec);
    const got = zeroCopy.tuneSocket(fd, {
      sndbuf: plan.sndbuf,
      rcvbuf: plan.rcvbuf,
      congestion: plan.congestion,
      userTimeoutMs: opts.userTimeoutMs,
    });
    const tuning: SocketTuning = {
      congestion: got.congestion,
      sndbuf: got.sndbuf,
      rcvbuf: got.rcvbuf,
      sndbufSet: plan.sndbuf !== undefined,
      rcvbufSet: plan.rcvbuf !== undefined,
      rttUs,
      bdpBytes: plan.bdpBytes,
      userTimeoutMs: opts.userTimeoutMs,
    };
    if (plan.congestion !== undefined && !got.congestionSet && !refusalLogged) {
      refusalLogged = true;
      log.warn({ wanted: plan.congestion, kept: got.congestion }, "kernel refused the congestion control");
    }
    return tuning;
  } catch (err) {
    log.warn({ err }, "data socket tuning failed; using the kernel's defaults");
    return undefined;
  }
}
