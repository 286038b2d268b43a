import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { z } from "zod";
import { parseHostPort } from "../config.js";

/** A bearer token shorter than this is refused: it would be guessable. */
const MIN_TOKEN_CHARS = 16;

/** Where a service serves /metrics, /healthz and /readyz, and the bearer token it asks for. */
export interface MetricsSettings {
  /** HOST:PORT (--metrics-listen, DWCP_METRICS_LISTEN); undefined: no listener. */
  host: string;
  port: number;
  /**
   * The bearer token every request must present (read from --metrics-token-file,
   * DWCP_METRICS_TOKEN_FILE); undefined on a loopback address without a token file. Never logged.
   */
  token: string | undefined;
}

/** The flags a service takes for its metrics listener. */
export interface MetricsFlags {
  "metrics-listen"?: string | undefined;
  "metrics-token-file"?: string | undefined;
}

/** True for addresses only this machine reaches: 127.0.0.0/8, ::1 and localhost. */
export function isLoopback(host: string): boolean {
  if (host === "localhost" || host === "::1") return true;
  return isIP(host) === 4 && host.startsWith("127.");
}

/**
 * The metrics listener's settings, checked: HOST:PORT well formed, and an address other than
 * loopback only with a token file holding at least 16 characters (anyone who reaches the port
 * would otherwise read the service's state). Undefined when no listen address is given.
 */
export const MetricsConfig = z
  .object({ listen: z.string().optional(), tokenFile: z.string().min(1).optional() })
  .transform((o, ctx): MetricsSettings | undefined => {
    if (o.listen === undefined || o.listen === "") {
      if (o.tokenFile !== undefined)
        ctx.addIssue({ code: "custom", message: "--metrics-token-file needs --metrics-listen HOST:PORT" });
      return undefined;
    }
    const hp = parseHostPort(o.listen);
    if (hp === undefined) {
      ctx.addIssue({ code: "custom", message: `--metrics-listen must be HOST:PORT, got "${o.listen}"` });
      return undefined;
    }
    if (o.tokenFile === undefined) {
      if (!isLoopback(hp.host))
        ctx.addIssue({
          code: "custom",
          message:
            `--metrics-listen ${o.listen} is not a loopback address: give --metrics-token-file FILE ` +
            "(DWCP_METRICS_TOKEN_FILE) holding a bearer token for the scraper, or listen on 127.0.0.1",
        });
      return { ...hp, token: undefined };
    }
    let token: string;
    try {
      token = readFileSync(o.tokenFile, "utf8").trim();
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? "error";
      ctx.addIssue({ code: "custom", message: `--metrics-token-file ${o.tokenFile} cannot be read: ${why}` });
      return undefined;
    }
    if (token.length < MIN_TOKEN_CHARS || /\s/.test(token))
      ctx.addIssue({
        code: "custom",
        message: `--metrics-token-file ${o.tokenFile} must hold one token of at least ${MIN_TOKEN_CHARS} characters`,
      });
    return { ...hp, token };
  });

/**
 * The metrics settings' input from flags over the environment (DWCP_METRICS_LISTEN,
 * DWCP_METRICS_TOKEN_FILE), for a service's config schema (field `metrics: MetricsConfig`).
 */
export function metricsInput(
  flags: MetricsFlags,
  env: Record<string, string | undefined>,
): { listen?: string; tokenFile?: string } {
  const listen = flags["metrics-listen"] ?? env["DWCP_METRICS_LISTEN"];
  const tokenFile = flags["metrics-token-file"] ?? env["DWCP_METRICS_TOKEN_FILE"];
  return {
    ...(listen ? { listen } : {}),
    ...(tokenFile ? { tokenFile } : {}),
  };
}
