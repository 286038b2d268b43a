import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  createSecureContext,
  type ConnectionOptions,
  type SecureContext,
  type TLSSocket,
  type TlsOptions,
} from "node:tls";
import { z } from "zod";
import { ConfigError } from "#common/errors.js";
import { identitiesOf } from "#common/pki.js";

/**
 * TLS 1.3 with mutual authentication for dwcp's links. Every peer presents a certificate from
 * the deployment's CA; identity is the `dwcp:host:<id>` URI in its subjectAltName (see pki.ts),
 * not a DNS name: the dialling side checks that the peer names exactly the host it meant to
 * reach, the accepting side that the peer is some host of the deployment (and the protocol on
 * top binds that host to what the peer claims). The key proof of handshake.ts still runs inside
 * the TLS session, binding the connection to one migration or link.
 */

/** The URI prefix of a host identity in a certificate. */
export const HOST_IDENTITY_PREFIX = "dwcp:host:";

/** The deployment CA and this process's certificate and key, PEM, as the links use them. */
export interface LinkTls {
  ca: string;
  cert: string;
  key: string;
  /** The dwcp identities this process's own certificate names. */
  identities: readonly string[];
}

/** How a link is secured: TLS material, or plaintext by explicit choice (trusted links only). */
export type LinkSecurity = { mode: "tls"; tls: LinkTls } | { mode: "plaintext" };

/**
 * TLS 1.3 only. AES-128-GCM first: with AES-NI it is the cheapest suite, and the data channel
 * is bulk transfer; AES-256-GCM and ChaCha20 stay for peers that prefer them.
 */
const COMMON = {
  minVersion: "TLSv1.3",
  maxVersion: "TLSv1.3",
  ciphersuites: "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
} as const;

/**
 * One client context per TLS material: building it parses the CA, certificate and key (~1 ms),
 * and a mover dials once per batch.
 */
const clientContexts = new WeakMap<LinkTls, SecureContext>();

/** tls.connect() options: our certificate, the CA, and no DNS hostname check (see peerIdentities). */
export function clientTlsOptions(t: LinkTls): ConnectionOptions {
  let secureContext = clientContexts.get(t);
  if (secureContext === undefined) {
    secureContext = createSecureContext({ ...COMMON, ca: t.ca, cert: t.cert, key: t.key });
    clientContexts.set(t, secureContext);
  }
  return {
    ...COMMON,
    secureContext,
    rejectUnauthorized: true,
    checkServerIdentity: () => undefined,
  };
}

/**
 * tls.createServer() options: a client certificate is requested, and checked against the CA by
 * the listener (transport.ts), which refuses a peer that is not `authorized` with the reason
 * logged; Node's own rejectUnauthorized would only drop the socket without saying why.
 */
export function serverTlsOptions(t: LinkTls): TlsOptions {
  return { ...COMMON, ca: t.ca, cert: t.cert, key: t.key, requestCert: true, rejectUnauthorized: false };
}

/** The dwcp identities the (already verified) peer certificate of `socket` names. */
export function peerIdentities(socket: TLSSocket): string[] {
  const raw = socket.getPeerCertificate().raw as Buffer | undefined;
  if (raw === undefined || raw.length === 0) return [];
  try {
    return identitiesOf(raw);
  } catch {
    return [];
  }
}

/** The hosts (`dwcp:host:<id>` identities, without the prefix) a peer certificate names. */
export function hostsOf(identities: readonly string[]): string[] {
  return identities.filter((i) => i.startsWith(HOST_IDENTITY_PREFIX)).map((i) => i.slice(HOST_IDENTITY_PREFIX.length));
}

/** The TLS settings of a link process: DWCP_TLS_CA/CERT/KEY (file paths) and DWCP_DATA_PLAINTEXT. */
export const LinkSecurityEnv = z.object({
  DWCP_TLS_CA: z.string().min(1).optional(),
  DWCP_TLS_CERT: z.string().min(1).optional(),
  DWCP_TLS_KEY: z.string().min(1).optional(),
  /** on: the links run without TLS (trusted networks only; logged at start-up). Default off. */
  DWCP_DATA_PLAINTEXT: z.enum(["on", "off"], { message: 'must be "on" or "off"' }).default("off"),
});
export type LinkSecurityEnv = z.infer<typeof LinkSecurityEnv>;

/** What a link process was configured with, before any file is read. */
export type LinkSecuritySetting =
  | { mode: "tls"; caFile: string; certFile: string; keyFile: string }
  | { mode: "plaintext" }
  | { mode: "none" };

const MISSING =
  "the data link needs DWCP_TLS_CA, DWCP_TLS_CERT and DWCP_TLS_KEY (the deployment CA and this host's certificate " +
  "and key, e.g. <dataDir>/pki from `dwcp up`), or DWCP_DATA_PLAINTEXT=on (--plaintext-data) for a trusted link";

/** The setting from the environment (and a --plaintext-data flag); "none" when nothing is given. */
export function linkSecuritySetting(e: LinkSecurityEnv, plaintextFlag = false): LinkSecuritySetting {
  if (plaintextFlag || e.DWCP_DATA_PLAINTEXT === "on") return { mode: "plaintext" };
  const { DWCP_TLS_CA: caFile, DWCP_TLS_CERT: certFile, DWCP_TLS_KEY: keyFile } = e;
  if (caFile !== undefined && certFile !== undefined && keyFile !== undefined)
    return { mode: "tls", caFile, certFile, keyFile };
  return { mode: "none" };
}

/** Problems of a setting a link server (a mover, an agent) cannot start with: it needs one or the other. */
export function linkSecurityProblems(s: LinkSecuritySetting, e: LinkSecurityEnv): string[] {
  if (s.mode !== "none") return [];
  const given = [e.DWCP_TLS_CA && "DWCP_TLS_CA", e.DWCP_TLS_CERT && "DWCP_TLS_CERT", e.DWCP_TLS_KEY && "DWCP_TLS_KEY"];
  const some = given.filter(Boolean);
  return [some.length > 0 ? `${MISSING} (only ${some.join(", ")} is set)` : MISSING];
}

/**
 * Read and check the files of a TLS setting: PEM, a key that matches the certificate, a
 * certificate the CA signed. Every problem is listed in one ConfigError.
 */
export function loadLinkSecurity(s: LinkSecuritySetting): LinkSecurity | undefined {
  if (s.mode === "none") return undefined;
  if (s.mode === "plaintext") return { mode: "plaintext" };
  const problems: string[] = [];
  const read = (what: string, file: string): string => {
    try {
      return readFileSync(file, "utf8");
    } catch (err) {
      problems.push(`${what} ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      return "";
    }
  };
  const ca = read("DWCP_TLS_CA", s.caFile);
  const cert = read("DWCP_TLS_CERT", s.certFile);
  const key = read("DWCP_TLS_KEY", s.keyFile);
  if (problems.length > 0) throw new ConfigError(problems);
  let identities: string[] = [];
  try {
    const leaf = new X509Certificate(cert);
    if (!leaf.verify(new X509Certificate(ca).publicKey))
      problems.push(`DWCP_TLS_CERT ${s.certFile} was not issued by the CA in DWCP_TLS_CA ${s.caFile}`);
    identities = identitiesOf(cert);
    createSecureContext({ ca, cert, key });
  } catch (err) {
    problems.push(`DWCP_TLS_CA/CERT/KEY do not form a usable PEM set: ${(err as Error).message}`);
  }
  if (problems.length === 0 && hostsOf(identities).length === 0)
    problems.push(`DWCP_TLS_CERT ${s.certFile} names no dwcp:host:<id> identity: use the host's certificate`);
  if (problems.length > 0) throw new ConfigError(problems);
  return { mode: "tls", tls: { ca, cert, key, identities } };
}

/**
 * The config field of a link server (a mover, a replication agent): DWCP_TLS_* and
 * DWCP_DATA_PLAINTEXT from the environment plus a --plaintext-data flag (`plaintextFlag`); a
 * setting with neither TLS material nor plaintext is a problem. Input: the environment.
 */
export const linkServerSecurity = LinkSecurityEnv.extend({ plaintextFlag: z.boolean().default(false) })
  .superRefine((e, ctx) => {
    for (const message of linkSecurityProblems(linkSecuritySetting(e, e.plaintextFlag), e))
      ctx.addIssue({ code: "custom", message });
  })
  .transform((e) => linkSecuritySetting(e, e.plaintextFlag));

/** The same for a link client that may also run without any (it then refuses remote links). */
export const linkClientSecurity = LinkSecurityEnv.extend({ plaintextFlag: z.boolean().default(false) }).transform((e) =>
  linkSecuritySetting(e, e.plaintextFlag),
);

/** The warning a process logs at start-up when its links run in plaintext. */
export const PLAINTEXT_WARNING =
  "DWCP_DATA_PLAINTEXT=on: the data links run WITHOUT TLS; anyone on the network can read and alter them";
