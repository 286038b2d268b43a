import { spawnSync } from "node:child_process";
import { findNatsServer, NatsServerMissingError } from "#common/nats-server.js";

export interface ServerInfo {
  bin: string;
  /** e.g. "2.9.10" */
  version: string;
  major: number;
  minor: number;
  patch: number;
  features: {
    /** `jetstream { sync_interval: always }`: fsync before every ack (>= 2.10). */
    syncInterval: boolean;
    /** Stepdown requests may name a preferred new leader (>= 2.11). */
    stepdownPlacement: boolean;
  };
}

/**
 * The nats-server the suite runs (DWCP_NATS_SERVER, PATH or /usr/sbin), and what it supports,
 * detected from `nats-server --version` rather than assumed.
 */
export function serverInfo(): ServerInfo {
  const bin = findNatsServer();
  if (bin === undefined) throw new NatsServerMissingError();
  const out = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 10_000 });
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(`${out.stdout}${out.stderr}`);
  if (!m) throw new Error(`cannot read the version of ${bin}: ${JSON.stringify(`${out.stdout}${out.stderr}`.trim())}`);
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const atLeast = (a: number, b: number): boolean => major > a || (major === a && minor >= b);
  return {
    bin,
    version: `${major}.${minor}.${patch}`,
    major,
    minor,
    patch,
    features: { syncInterval: atLeast(2, 10), stepdownPlacement: atLeast(2, 11) },
  };
}
