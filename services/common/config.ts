import type { z } from "zod";
import { ConfigError } from "./errors.js";

/**
 * Validates a service's settings (flags already merged over environment) with its zod schema,
 * listing every problem at once, and freezes the result.
 */
export function loadConfig<S extends z.ZodType>(schema: S, input: unknown): Readonly<z.infer<S>> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".") || "(config)"}: ${i.message}`));
  }
  return Object.freeze(parsed.data);
}

/** Parses "HOST:PORT" (IPv6 as [::1]:PORT). */
export function parseHostPort(value: string): { host: string; port: number } | undefined {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value);
  if (!m || m[1] === undefined || m[2] === undefined) return undefined;
  const port = Number(m[2]);
  if (port > 65535) return undefined;
  return { host: m[1].replace(/^\[|\]$/g, ""), port };
}

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";
export const natsUrlFromEnv = (): string => process.env["DWCP_NATS_URL"] ?? DEFAULT_NATS_URL;
