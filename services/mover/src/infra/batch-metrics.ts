import { metrics } from "#common/metrics/registry.js";
import type { SendBatchResult } from "./data-channel/client.js";

/** Counts one batch the source sent and the destination acknowledged (a few adds per batch). */
export function observeBatchSent(r: SendBatchResult): void {
  let zero = 0;
  for (const c of r.chunks) if (c.zero) zero += c.length;
  metrics.bytesRead.inc(r.bytes);
  metrics.bytesZero.inc(zero);
  const reused = r.breakdown.baseReused;
  metrics.bytesPayload.inc(r.bytes - zero - reused);
  metrics.bytesBaseReused.inc(reused);
  metrics.bytesWire.inc(r.wireBytes);
  metrics.batchSend.observe(r.durationMs / 1000);
}

/** A batch attempt that failed with `code` (a FailureCode: a closed set). */
export const observeBatchFailed = (code: string): void => metrics.batchFailures.inc({ code });

/** A delivery a newer holder fenced off. */
export const observeFenced = (): void => metrics.fenced.inc();
