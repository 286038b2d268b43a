import type { Logger } from "#common/logger.js";

// Connections refused before they authenticated (a failed TLS handshake, a bad HELLO, a peer that
// never spoke) are anyone's to make: logging each one would let an attacker with network access
// write the log as fast as it can connect. Per window of `intervalMs`, the first `burst`
// refusals are logged one by one (a misconfigured peer stays easy to diagnose); the rest are only
// counted, and the window ends with one summary line: how many, by reason, from how many peers.
// The count is exact; the reason and peer sets are bounded, so the summary is too.

export interface RefusalLimits {
  /** Length of a window, from its first refusal. Default 10000 ms. */
  intervalMs: number;
  /** Refusals logged one by one per window. Default 10. */
  burst: number;
  /** Distinct reasons a summary counts apart; more fall under "other". Default 16. */
  maxReasons: number;
  /** Distinct peer addresses counted per window; beyond it the count is a lower bound. Default 1024. */
  maxPeers: number;
}

export const DEFAULT_REFUSAL_LIMITS: RefusalLimits = { intervalMs: 10_000, burst: 10, maxReasons: 16, maxPeers: 1024 };

/** A reason longer than this is cut: it may echo what the peer sent. */
export const MAX_REASON_CHARS = 120;
export const OTHER_REASON = "other";

/** The refusals of one window that were counted, not logged one by one. */
export interface RefusalSummary {
  /** Refusals in the window that got no line of their own. */
  suppressed: number;
  /** All refusals of the window (logged one by one and counted). */
  refused: number;
  byReason: Record<string, number>;
  /** Distinct peer addresses among all of the window's refusals (at least, if peersCapped). */
  peers: number;
  peersCapped: boolean;
  windowMs: number;
}

export const cutReason = (reason: string): string =>
  reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS)}…` : reason;

/** Pure: the tally of refusals over windows of time. Time comes from the caller. */
export class RefusalTally {
  private start: number | undefined;
  private refused = 0;
  private suppressed = 0;
  private readonly reasons = new Map<string, number>();
  private readonly peers = new Set<string>();
  private peersCapped = false;

  constructor(readonly limits: RefusalLimits = DEFAULT_REFUSAL_LIMITS) {}

  /** When the current window ends (undefined: no window open). */
  get windowEnd(): number | undefined {
    return this.start === undefined ? undefined : this.start + this.limits.intervalMs;
  }

  /**
   * Notes a refusal at `nowMs`: "log" it in full, or "count" it into the window's summary. The
   * caller first takes the summary of a window that has ended (flush), as note() opens a new one.
   */
  note(nowMs: number, peer: string, reason: string): "log" | "count" {
    if (this.start === undefined || nowMs >= this.start + this.limits.intervalMs) this.reset(nowMs);
    this.refused++;
    if (this.peers.size < this.limits.maxPeers) this.peers.add(peer);
    else if (!this.peers.has(peer)) this.peersCapped = true;
    const key = cutReason(reason);
    const counted = this.reasons.has(key) || this.reasons.size < this.limits.maxReasons ? key : OTHER_REASON;
    this.reasons.set(counted, (this.reasons.get(counted) ?? 0) + 1);
    if (this.refused <= this.limits.burst) return "log";
    this.suppressed++;
    return "count";
  }

  /**
   * The summary of the window if it has ended by `nowMs` (or `force`) and counted refusals it did
   * not log; the window is closed either way once it has ended.
   */
  flush(nowMs: number, force = false): RefusalSummary | undefined {
    if (this.start === undefined || (!force && nowMs < this.start + this.limits.intervalMs)) return undefined;
    const summary: RefusalSummary | undefined =
      this.suppressed === 0
        ? undefined
        : {
            suppressed: this.suppressed,
            refused: this.refused,
            byReason: Object.fromEntries(this.reasons),
            peers: this.peers.size,
            peersCapped: this.peersCapped,
            windowMs: Math.max(0, Math.round(nowMs - this.start)),
          };
    this.start = undefined;
    this.refused = 0;
    this.suppressed = 0;
    this.reasons.clear();
    this.peers.clear();
    this.peersCapped = false;
    return summary;
  }

  private reset(nowMs: number): void {
    this.flush(nowMs, true);
    this.start = nowMs;
  }
}

/** One refusal as the caller would log it on its own. */
export interface Refusal {
  /** The peer's address (counted per window). */
  peer: string;
  /** Why (counted per window; cut to MAX_REASON_CHARS). */
  reason: string;
  /** The line's message, e.g. "link refused: TLS failed". */
  msg: string;
  /** Further fields of the line (code, remote, ...). */
  fields?: Record<string, unknown>;
}

/** The summary line's message. */
export const REFUSALS_SUMMARY_MSG = "pre-auth refusals counted, not logged one by one";

/**
 * A listener's refusal log: RefusalTally over a logger, with a timer that writes a window's
 * summary when it ends (unref'd: it never keeps a process alive). close() writes what is left.
 */
export class RefusalLog {
  private readonly tally: RefusalTally;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    limits: Partial<RefusalLimits> = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tally = new RefusalTally({ ...DEFAULT_REFUSAL_LIMITS, ...limits });
  }

  refused(r: Refusal): void {
    const now = this.now();
    const ended = this.tally.flush(now);
    if (this.tally.windowEnd === undefined) this.stopTimer();
    this.writeSummary(ended);
    const verdict = this.tally.note(now, r.peer, r.reason);
    if (verdict === "log") this.log.warn({ ...r.fields, reason: cutReason(r.reason) }, r.msg);
    else this.arm();
  }

  /** Writes the open window's summary now and stops the timer. */
  close(): void {
    this.stopTimer();
    this.writeSummary(this.tally.flush(this.now(), true));
  }

  private stopTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    if (this.timer !== undefined) return;
    const end = this.tally.windowEnd ?? this.now();
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.writeSummary(this.tally.flush(this.now(), true));
      },
      Math.max(1, end - this.now()),
    );
    this.timer.unref();
  }

  private writeSummary(s: RefusalSummary | undefined): void {
    if (s !== undefined) this.log.warn({ code: "REFUSALS_SUMMARY", ...s }, REFUSALS_SUMMARY_MSG);
  }
}
