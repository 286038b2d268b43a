import type { VolumeKind } from "#schemas/index.js";
import { DwcpError } from "#common/errors.js";

/** A mistake in what the user typed: printed as one line with what to do, exit code 2. */
export class UsageError extends DwcpError {
  readonly code = "USAGE";
  readonly retryable = false;
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/** "4M", "64KiB", "1g", "65536" -> bytes (binary units). */
export function parseSize(flag: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = m?.[2]?.toLowerCase() ?? "";
  if (!m?.[1] || !(unit in UNITS)) throw new UsageError(`${flag} must be a size like 4M, 64K or 1G, got "${value}"`);
  return Math.round(Number(m[1]) * (UNITS[unit] ?? 1));
}

/** "30s", "500ms", "2m", "1h" -> milliseconds. */
export function parseDuration(flag: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value.trim());
  if (!m?.[1] || !m[2]) throw new UsageError(`${flag} must be a duration like 30s, 5m or 1h, got "${value}"`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
}

/** --from HOST:PATH[,PATH...]; a path may end in =memory or =disk (default: disk). */
export function parseFrom(value: string): { host: string; volumes: Array<{ path: string; kind: VolumeKind }> } {
  const i = value.indexOf(":");
  if (i <= 0 || i === value.length - 1) throw new UsageError(`--from must be HOST:PATH[,PATH...], got "${value}"`);
  const volumes = value
    .slice(i + 1)
    .split(",")
    .filter(Boolean)
    .map((p) => {
      const m = /^(.*)=(disk|memory)$/.exec(p);
      return m?.[1] ? { path: m[1], kind: m[2] as VolumeKind } : { path: p, kind: "disk" as const };
    });
  return { host: value.slice(0, i), volumes };
}

/** --to HOST:DIR */
export function parseTo(value: string): { host: string; dir: string } {
  const i = value.indexOf(":");
  if (i <= 0 || i === value.length - 1) throw new UsageError(`--to must be HOST:DIR, got "${value}"`);
  return { host: value.slice(0, i), dir: value.slice(i + 1) };
}

export function fmtBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

/** A rate in IEC units, like every size dwcp prints and reads (MiB = 1024² bytes). */
export function fmtRate(bytesPerSec: number): string {
  return `${fmtBytes(bytesPerSec)}/s`;
}
