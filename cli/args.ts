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

const DURATION_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** "30s", "500ms", "2m", "1h", "7d" -> milliseconds. */
export function parseDuration(flag: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim());
  if (!m?.[1] || !m[2]) throw new UsageError(`${flag} must be a duration like 30s, 5m, 1h or 7d, got "${value}"`);
  return Number(m[1]) * DURATION_MS[m[2] as keyof typeof DURATION_MS];
}

/** "100M/s" or "100M" -> bytes per second. */
export function parseRate(flag: string, value: string): number {
  const m = /^(.*?)(\/s)?$/i.exec(value.trim());
  try {
    return parseSize(flag, m?.[1] ?? value);
  } catch {
    throw new UsageError(`${flag} must be a rate like 100M/s or 1G/s, got "${value}"`);
  }
}

/** A whole number >= 1. */
export function parseCount(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1)
    throw new UsageError(`${flag} must be a whole number of 1 or more, got "${value}"`);
  return n;
}

/** A TCP port, 1-65535. */
export function parsePort(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n < 1 || n > 65535)
    throw new UsageError(`${flag} must be a TCP port from 1 to 65535, got "${value}"`);
  return n;
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
      const m = /^(.*)=([^=/]*)$/.exec(p);
      if (!m?.[1]) return { path: p, kind: "disk" as const };
      if (m[2] !== "disk" && m[2] !== "memory")
        throw new UsageError(`--from: unknown volume kind "${m[2]}" in "${p}": a path may end in =disk or =memory`);
      const kind: VolumeKind = m[2];
      return { path: m[1], kind };
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

const COMPRESSION_MODES = ["auto", "none", "lz4", "zstd"] as const;

/** `--compression auto|none|lz4|zstd`. */
export function parseCompression(value: string): (typeof COMPRESSION_MODES)[number] {
  const mode = COMPRESSION_MODES.find((m) => m === value);
  if (mode === undefined) {
    throw new UsageError(`--compression must be one of ${COMPRESSION_MODES.join(", ")}, got "${value}"`);
  }
  return mode;
}

/** A whole-number flag within [min, max]: `--weight 3`, `--priority=-5`. */
export function parseIntIn(flag: string, value: string, min: number, max: number): number {
  const n = /^-?\d+$/.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, got "${value}"`);
  return n;
}
