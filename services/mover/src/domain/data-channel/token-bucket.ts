/**
 * Token bucket on wire bytes, pure: the caller passes the clock. Tokens may go negative: the
 * sender waits until the debt is paid, then sends the frame whole, so the long-run rate holds
 * for any frame size.
 */
export interface TokenBucket {
  rateBytesPerSec: number;
  burstBytes: number;
  tokens: number;
  atMs: number;
}

export function newTokenBucket(rateBytesPerSec: number, nowMs: number, burstBytes = rateBytesPerSec / 10): TokenBucket {
  if (!(rateBytesPerSec > 0)) throw new RangeError("rate must be positive");
  const burst = Math.max(1, burstBytes);
  return { rateBytesPerSec, burstBytes: burst, tokens: burst, atMs: nowMs };
}

/** Take `bytes` now; returns how long to wait before sending them (ms, 0 = go). Mutates `b`. */
export function reserve(b: TokenBucket, bytes: number, nowMs: number): number {
  const elapsedMs = Math.max(0, nowMs - b.atMs);
  b.tokens = Math.min(b.burstBytes, b.tokens + (elapsedMs * b.rateBytesPerSec) / 1000);
  b.atMs = nowMs;
  b.tokens -= bytes;
  return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens * 1000) / b.rateBytesPerSec);
}

/** A rate for "no limit": high enough never to make a sender wait, finite so the arithmetic stays exact. */
export const UNLIMITED_BYTES_PER_SEC = 2 ** 50;

/**
 * Changes the rate from `nowMs` on (a migration's limit changed while it sends): the tokens
 * earned so far count at the old rate, a debt stays to be paid at the new one, and the burst
 * follows the rate. Mutates `b`.
 */
export function setRate(b: TokenBucket, rateBytesPerSec: number, nowMs: number): void {
  if (!(rateBytesPerSec > 0)) throw new RangeError("rate must be positive");
  reserve(b, 0, nowMs);
  b.rateBytesPerSec = rateBytesPerSec;
  b.burstBytes = Math.max(1, rateBytesPerSec / 10);
  b.tokens = Math.min(b.tokens, b.burstBytes);
}
