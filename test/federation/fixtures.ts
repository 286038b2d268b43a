import type { Capacity, FederationEvent } from "#schemas/federation.js";

/** Builders for unit specs: events of one site, numbered as that site's log would number them. */
export const capacity = (free = 4): Capacity => ({
  vcpus: { total: 8, free },
  memoryBytes: { total: 32 * 2 ** 30, free: free * 2 ** 30 },
  diskBytes: { total: 2 ** 40, free: 2 ** 39 },
});

type Body<T extends FederationEvent["type"]> = Omit<
  Extract<FederationEvent, { type: T }>,
  "type" | "version" | "site" | "seq" | "at"
>;

/** A site's log: each call appends the next event with the next seq at the given time. */
export function logOf(site: string) {
  let seq = 0;
  const make = <T extends FederationEvent["type"]>(
    type: T,
    at: string,
    body: Body<T>,
  ): Extract<FederationEvent, { type: T }> =>
    ({ type, version: 1, site, seq: ++seq, at, ...body }) as unknown as Extract<FederationEvent, { type: T }>;
  return {
    joined: (at: string, reportIntervalMs = 1_000, appendEncodings?: string[]) =>
      make("SiteJoined", at, {
        health: "healthy",
        capacity: capacity(),
        reportIntervalMs,
        ...(appendEncodings ? { appendEncodings } : {}),
      }),
    health: (
      at: string,
      health: "healthy" | "degraded" | "unhealthy" = "healthy",
      free = 4,
      appendEncodings?: string[],
    ) =>
      make("SiteHealthReported", at, {
        health,
        capacity: capacity(free),
        reportIntervalMs: 1_000,
        ...(appendEncodings ? { appendEncodings } : {}),
      }),
    left: (at: string, reason = "maintenance") => make("SiteLeft", at, { reason }),
    placed: (at: string, vm: string, host?: string) => make("VmPlaced", at, host === undefined ? { vm } : { vm, host }),
    moved: (at: string, vm: string, from: string, to: string) => make("VmMoved", at, { vm, from, to }),
    removed: (at: string, vm: string) => make("VmRemoved", at, { vm }),
  };
}

export const t = (seconds: number): string => new Date(Date.UTC(2026, 0, 1, 0, 0, seconds)).toISOString();
