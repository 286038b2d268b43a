import type { Capacity, SiteHealth } from "#schemas/federation.js";

/** Below this share of free memory or disk a site reports itself degraded; at zero, unhealthy. */
export const DEGRADED_FREE_RATIO = 0.1;

/** A site's own judgement of its health from its capacity figures. */
export function healthOf(c: Capacity): SiteHealth {
  const ratios = [c.memoryBytes, c.diskBytes].map((r) => (r.total === 0 ? 1 : r.free / r.total));
  if (ratios.some((r) => r === 0)) return "unhealthy";
  if (ratios.some((r) => r < DEGRADED_FREE_RATIO)) return "degraded";
  return "healthy";
}
