import { z } from "zod";
import { HostId } from "#schemas/index.js";
import { ConfigError } from "#common/errors.js";
import { loadConfig, natsUrlFromEnv, parseHostPort } from "#common/config.js";

const MoverConfig = z.object({
  natsUrl: z.string().min(1),
  host: HostId,
  /** Directories this mover may read and write under; nothing outside them is touched. */
  roots: z.array(z.string().min(1)).min(1, "at least one --root DIR is required"),
  listenHost: z.string().min(1),
  listenPort: z.number().int().min(0).max(65535),
  /** Host name other movers use to reach this one's data channel (defaults to the listen host). */
  advertiseHost: z.string().min(1),
  /** Cluster secret for data-channel authentication; never logged. */
  secret: z.string().min(16, "DWCP_SECRET must be set to at least 16 characters (the same on every mover)"),
  /** Batches moved at once. */
  concurrency: z.number().int().min(1).max(64),
  replicas: z.union([z.literal(1), z.literal(3), z.literal(5)]),
});
export type MoverConfig = z.infer<typeof MoverConfig>;

export interface MoverFlags {
  nats?: string;
  host?: string;
  root?: string[];
  listen?: string;
  advertise?: string;
  concurrency?: string;
  replicas?: string;
}

export function moverConfig(flags: MoverFlags, env = process.env): Readonly<MoverConfig> {
  const listen = flags.listen ?? env["DWCP_LISTEN"] ?? "127.0.0.1:0";
  const hp = parseHostPort(listen);
  if (!hp) throw new ConfigError([`--listen must be HOST:PORT, got "${listen}"`]);
  const num = (v: string | undefined, d: number): number => (v === undefined ? d : Number(v));
  return loadConfig(MoverConfig, {
    natsUrl: flags.nats ?? natsUrlFromEnv(),
    host: flags.host ?? env["DWCP_HOST"],
    roots: flags.root ?? env["DWCP_ROOTS"]?.split(",").filter(Boolean) ?? [],
    listenHost: hp.host,
    listenPort: hp.port,
    advertiseHost: flags.advertise ?? env["DWCP_ADVERTISE"] ?? (hp.host === "0.0.0.0" ? "127.0.0.1" : hp.host),
    secret: env["DWCP_SECRET"] ?? "",
    concurrency: num(flags.concurrency ?? env["DWCP_CONCURRENCY"], 2),
    replicas: num(flags.replicas ?? env["DWCP_REPLICAS"], 1),
  });
}
