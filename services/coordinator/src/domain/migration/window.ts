/**
 * How many of a migration's batches may be in its source host's work queue at once (published
 * and not yet done): per unit of its weight, WINDOW_PER_WEIGHT batches or WINDOW_BYTES_PER_WEIGHT
 * of them, whichever is more; at most MAX_WINDOW.
 *
 * The source mover takes work items first come, first served, a few at a time. If every batch
 * were queued at once, migrations starting together would be served in the order their batches
 * were queued, whatever their weights. With a window per migration the queue holds each
 * migration's batches in proportion to its weight, and while the mover is the bottleneck each
 * migration's batches go through in that proportion: its share of the mover, and so of the link.
 * Four large batches keep two queued behind the two a mover sends at once by default, so the next
 * one is there when one ends; 16 MiB of small ones (a mover sends up to 16 batches of at most
 * 1 MiB at once) keep its small slots as busy.
 */
export const WINDOW_PER_WEIGHT = 4;
export const WINDOW_BYTES_PER_WEIGHT = 16 * 1024 * 1024;
export const MAX_WINDOW = 1024;

export function dispatchWindow(weight = 1, batchBytes = 0): number {
  const perWeight = Math.max(WINDOW_PER_WEIGHT, Math.ceil(WINDOW_BYTES_PER_WEIGHT / Math.max(1, batchBytes)));
  return Math.min(MAX_WINDOW, perWeight * Math.max(1, Math.floor(weight)));
}
