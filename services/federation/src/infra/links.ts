import { readFileSync } from "node:fs";
import { DwcpError } from "#common/errors.js";
import { connectNats, type NatsCredentials } from "#common/nats.js";

/** A site could not reach another site's JetStream API over the leafnode links in time. */
export class DomainUnreachableError extends DwcpError {
  readonly code = "DOMAIN_UNREACHABLE" as const;
  readonly retryable = true;
  constructor(
    readonly url: string,
    readonly domain: string,
    timeoutMs: number,
    /** What the servers' logs say of their leafnode links, when known. */
    logged = "",
  ) {
    super(
      `from ${url} the JetStream domain ${domain} did not answer within ${timeoutMs} ms; ` +
        (logged === "" ? "check the leafnode link (server logs)" : `the servers' leafnode log lines:\n${logged}`),
    );
  }
}

/**
 * How long a site may take to reach the other sites' domains. A leafnode that reconnects while
 * the hub still holds its previous connection sees its own loop-detection subject come back, and
 * nats-server then delays that link's next attempt by 30 s ("Loop detected ... Delaying attempt
 * to reconnect"); the links recover on their own, and the wait outlasts that delay.
 */
export const DOMAIN_WAIT_MS = 45_000;

/**
 * Resolves once the server at `url` reaches the JetStream API of every domain in `domains`.
 * Polls with a deadline: no event announces that leafnode interest has propagated, and a
 * request without responders fails at once, so each probe is cheap. Rejects with
 * DomainUnreachableError carrying the leafnode lines of `logFiles` (the servers' logs).
 */
export async function waitForDomains(
  url: string,
  domains: readonly string[],
  credentials: NatsCredentials,
  { timeoutMs = DOMAIN_WAIT_MS, logFiles = [] }: { timeoutMs?: number; logFiles?: readonly string[] } = {},
): Promise<void> {
  const { nc } = await connectNats(url, "dwcp-federation-probe", undefined, { credentials, waitOnFirstConnect: false });
  const deadline = Date.now() + timeoutMs;
  try {
    for (const domain of domains) {
      for (;;) {
        try {
          await nc.request(`$JS.${domain}.API.INFO`, "", { timeout: 1_000 });
          break;
        } catch {
          if (Date.now() > deadline) throw new DomainUnreachableError(url, domain, timeoutMs, leafnodeLines(logFiles));
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }
  } finally {
    await nc.close();
  }
}

/** The last leafnode lines (connections, closes, loops, violations) of each log in `files`. */
export function leafnodeLines(files: readonly string[], perFile = 8): string {
  return files
    .flatMap((f) => {
      let text = "";
      try {
        text = readFileSync(f, "utf8");
      } catch {
        return [];
      }
      const lines = text.split("\n").filter((l) => /leafnode|loop detected/i.test(l));
      return lines.length === 0 ? [] : [`${f}:`, ...lines.slice(-perFile)];
    })
    .join("\n");
}
