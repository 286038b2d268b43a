import { metrics } from "#common/metrics/registry.js";

/** What a committed sync reports to metrics (the recovery point, its duration and bytes). */
export interface SyncObservation {
  vm: string;
  /** When the source was read (ISO 8601): the recovery point. */
  takenAt: string;
  seconds: number;
  changedBytes: number;
  wireBytes: number;
}

/** Counts one committed sync and moves the VM's recovery point (the live RPO is time() minus it). */
export function observeSync(s: SyncObservation): void {
  metrics.syncs.inc({ outcome: "ok" });
  metrics.syncSeconds.observe(s.seconds);
  metrics.replChanged.inc(s.changedBytes);
  metrics.replWire.inc(s.wireBytes);
  const at = Date.parse(s.takenAt);
  if (Number.isFinite(at)) metrics.lastSnapshot.set({ vm: s.vm }, at / 1000);
}

/** Counts a sync that failed (the previous snapshot stays the recovery point). */
export const observeSyncFailed = (): void => metrics.syncs.inc({ outcome: "failed" });
