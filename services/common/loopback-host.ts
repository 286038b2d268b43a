import { isIP } from "node:net";

/**
 * True when an HTTP request's Host header names this machine's loopback: `localhost`, an address
 * in 127.0.0.0/8 or `[::1]`, with or without a port. A listener on loopback without a bearer
 * token answers only such requests: a web page the user opens elsewhere can point its own DNS
 * name at 127.0.0.1 (DNS rebinding) and then read the listener as same-origin, but its requests
 * carry that name in Host, never a loopback one.
 */
export function isLoopbackHost(header: string | undefined): boolean {
  if (header === undefined) return false;
  const host = hostOf(header.trim().toLowerCase());
  if (host === undefined) return false;
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

/**
 * True when a socket's address (`remoteAddress`: an IP, no port) is this machine's loopback:
 * 127.0.0.0/8, ::1 or an IPv4-mapped 127.x.
 */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const a = address.toLowerCase();
  const v4 = a.startsWith("::ffff:") ? a.slice(7) : a;
  if (isIP(v4) === 4) return v4.startsWith("127.");
  return a === "::1";
}

/** The answer (403) to a request whose Host is not loopback, on a loopback listener without a token. */
export const HOST_REFUSED = "the Host header must name a loopback address (localhost, 127.0.0.1 or [::1])";

/** The host part of a Host header (`name`, `name:port`, `[v6]` or `[v6]:port`), undefined if malformed. */
function hostOf(h: string): string | undefined {
  const v6 = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/.exec(h);
  if (v6) return v6[1];
  const m = /^([^:[\]]+)(?::\d{1,5})?$/.exec(h);
  return m?.[1];
}
