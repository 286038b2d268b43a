import type { Socket } from "node:net";
import { ConfigError } from "../errors.js";

// A budget for connections that have not proven who they are yet, kept apart from authenticated
// sessions: a peer that opens connections and never finishes a handshake can hold only so many
// slots, each for a short time, and never one an authenticated session needs. A pending
// connection must cost little (an fd and a small buffer: no thread waits for it, see the data
// server's preAuthReader), so the budget can be larger than what idle crowds muster. When the budget is
// full the oldest pending connection gives way to the new one (the same peer's first) if it has
// had time to authenticate, else the new one is refused: idle connections cannot lock out a
// legitimate sender, even one behind the same address, and churn cannot cut a handshake short.

export interface AdmissionOptions {
  /** Connections awaiting their handshake, over all peers. Default 256. */
  maxPending?: number;
  /** Connections awaiting their handshake from one peer address. Default 128. */
  maxPendingPerPeer?: number;
  /** A connection that has not authenticated this long after accept is dropped. Default 5000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * A pending connection younger than this is never dropped to make room (a newcomer is refused
   * instead): a legitimate handshake takes a round trip or two, so a peer that opens connections
   * as fast as it can cannot push one out before it completes. Default 500 ms.
   */
  minAgeToEvictMs?: number;
}

export const DEFAULT_ADMISSION: Required<AdmissionOptions> = {
  maxPending: 256,
  maxPendingPerPeer: 128,
  handshakeTimeoutMs: 5000,
  minAgeToEvictMs: 500,
};

/** One accepted connection's place in the budget (undefined: refused, close it at once). */
export interface AdmissionTicket {
  /** The handshake succeeded: the connection leaves the pending budget and its deadline. */
  authenticated(): void;
  /** The connection closed (idempotent). */
  release(): void;
}

interface Pending {
  peer: string;
  evict: (reason: string) => void;
  timer: NodeJS.Timeout;
  since: number;
}

/**
 * Why a pending connection was dropped: `evict` receives one of these as its reason, for the
 * caller's log (the peer sees only its socket closing).
 */
export const EVICTED_FOR_NEWER = "dropped: too many unauthenticated connections; a newer one took its place";
export const REFUSED_FULL = "refused: too many unauthenticated connections, all of them recent";
export const handshakeTimedOut = (ms: number): string => `no successful handshake within ${ms} ms`;

export class Admission {
  readonly limits: Required<AdmissionOptions>;
  /** Pending connections in accept order (a Map keeps insertion order). */
  private readonly pending = new Map<object, Pending>();
  private readonly perPeer = new Map<string, number>();
  /** Connections dropped so far because of the budget or the deadline. */
  dropped = 0;

  constructor(options: AdmissionOptions = {}) {
    this.limits = { ...DEFAULT_ADMISSION, ...options };
    const problems = Object.entries(this.limits)
      .filter(([k, v]) => !Number.isInteger(v) || v < (k === "minAgeToEvictMs" ? 0 : 1))
      .map(([k, v]) => `admission ${k} must be a positive integer, got ${v}`);
    if (problems.length > 0) throw new ConfigError(problems);
  }

  /** Connections awaiting their handshake. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Admits a new connection from `peer` (its address), making room first if the budget is full.
   * `evict` must close the connection; it is called at most once, with a reason: at once if there
   * is no room, or later if the connection is still unauthenticated at its deadline or has to give
   * way to a newer one.
   */
  admit(peer: string, evict: (reason: string) => void): AdmissionTicket {
    const full =
      ((this.perPeer.get(peer) ?? 0) >= this.limits.maxPendingPerPeer && !this.evictOldest(peer)) ||
      (this.pending.size >= this.limits.maxPending && !this.evictOldest());
    if (full) {
      this.dropped++;
      evict(REFUSED_FULL);
      return { authenticated: () => undefined, release: () => undefined };
    }
    const key = {};
    const timer = setTimeout(
      () => this.drop(key, handshakeTimedOut(this.limits.handshakeTimeoutMs)),
      this.limits.handshakeTimeoutMs,
    );
    timer.unref();
    this.pending.set(key, { peer, evict, timer, since: performance.now() });
    this.perPeer.set(peer, (this.perPeer.get(peer) ?? 0) + 1);
    return { authenticated: () => this.leave(key), release: () => this.leave(key) };
  }

  /** Drops the oldest pending connection (of `peer`), if it is old enough; true if one was dropped. */
  private evictOldest(peer?: string): boolean {
    for (const [key, p] of this.pending) {
      if (peer !== undefined && p.peer !== peer) continue;
      if (performance.now() - p.since < this.limits.minAgeToEvictMs) return false;
      this.drop(key, EVICTED_FOR_NEWER);
      return true;
    }
    return false;
  }

  private drop(key: object, reason: string): void {
    const p = this.pending.get(key);
    if (p === undefined) return;
    this.leave(key);
    this.dropped++;
    p.evict(reason);
  }

  private leave(key: object): void {
    const p = this.pending.get(key);
    if (p === undefined) return;
    clearTimeout(p.timer);
    this.pending.delete(key);
    const n = (this.perPeer.get(p.peer) ?? 1) - 1;
    if (n > 0) this.perPeer.set(p.peer, n);
    else this.perPeer.delete(p.peer);
  }
}

/** The address a socket's budget is kept under. */
export const peerOf = (socket: Socket): string => socket.remoteAddress ?? "unknown";
