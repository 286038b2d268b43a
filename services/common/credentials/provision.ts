import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { createUser, fromSeed } from "@nats-io/nkeys";
import { z } from "zod";
import { DwcpError } from "../errors.js";
import { createCertificateAuthority, hostIdentity, issueCertificate, roleIdentity, type KeyPairPem } from "../pki.js";

// The credentials of one deployment, kept in a directory (for `dwcp up`, its data dir): a CA,
// a certificate per nats-server and per identity, an nkey per NATS role, and trust.json, the
// public list of which nkey is which role. Provisioning is idempotent: what exists is kept, so
// a restarted stack keeps its identities.

/** A NATS role; each service process runs as exactly one. */
export type Role =
  | "admin"
  | "coordinator"
  | "cli"
  | "observer"
  | `mover-${string}`
  | `replication-${string}`
  | `site-${string}`;

export const moverRole = (host: string): Role => `mover-${host}`;
export const replicationRole = (host: string): Role => `replication-${host}`;
export const siteRole = (site: string): Role => `site-${site}`;

/** What one role holds: files a process of that role is given (DWCP_TLS_*, DWCP_NKEY_FILE). */
export interface RoleCredentials {
  role: Role;
  /** Public nkey (U...): the NATS user and the key its events are signed with. */
  publicKey: string;
  nkeyFile: string;
  certFile: string;
  keyFile: string;
}

export interface Provisioned {
  dir: string;
  caFile: string;
  /** nats-server's own certificate (SANs localhost, 127.0.0.1, ::1 and `serverNames`). */
  server: { certFile: string; keyFile: string };
  roles: Map<Role, RoleCredentials>;
  trustFile: string;
}

export interface ProvisionOptions {
  /** Hosts that run a mover and a replication service (roles mover-<h>, replication-<h>). */
  hosts: readonly string[];
  /** Federation sites (roles site-<s>). */
  sites?: readonly string[];
  /** Extra names for the server certificate: DNS names, or IP addresses (issued as IP SANs). */
  serverNames?: readonly string[];
  /**
   * Directory of the CA that issues every certificate (created there if missing): the sites of a
   * federation share one. Default `<dir>/pki`.
   */
  caDir?: string;
}

/** trust.json: public, readable by every service; maps a public nkey to its role (and host). */
export const TrustFile = z.object({
  version: z.literal(1),
  principals: z.record(
    z.string().regex(/^U[A-Z2-7]{55}$/),
    z.object({
      role: z.string().min(1).max(128),
      host: z.string().min(1).max(64).optional(),
      /** The federation site whose server knows this principal (a federation's trust file). */
      site: z.string().min(1).max(64).optional(),
    }),
  ),
});
export type TrustFile = z.infer<typeof TrustFile>;

export class CredentialsError extends DwcpError {
  readonly code = "CREDENTIALS_INVALID";
  readonly retryable = false;
}

const enc = new TextEncoder();

/** Writes `data` to `file` with mode 0600 via a temporary file, so a crash never leaves half of it. */
function writeSecret(file: string, data: string): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** The host of a mover role (mover-a -> a), if `role` is one: the inverse of moverRole. */
export const moverHostOf = (role: string): string | undefined => /^mover-(.+)$/.exec(role)?.[1];
/** The host of a replication role (replication-a -> a), if `role` is one: the inverse of replicationRole. */
/** The site of a `site-<s>` role, else undefined. */
export const siteOfRole = (role: string): string | undefined => /^site-(.+)$/.exec(role)?.[1];
export const replicationHostOf = (role: string): string | undefined => /^replication-(.+)$/.exec(role)?.[1];

/** The host a role runs for (mover-a, replication-a -> a), if any. */
export function hostOfRole(role: string): string | undefined {
  return moverHostOf(role) ?? replicationHostOf(role);
}

async function ensurePair(
  dir: string,
  name: string,
  issue: () => Promise<KeyPairPem>,
): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    const pair = await issue();
    writeSecret(keyFile, pair.key);
    writeFileSync(certFile, pair.cert, { mode: 0o644 });
  }
  return { certFile, keyFile };
}

function ensureNkey(dir: string, role: Role): { nkeyFile: string; publicKey: string } {
  const nkeyFile = join(dir, `${role}.nk`);
  if (!existsSync(nkeyFile)) writeSecret(nkeyFile, new TextDecoder().decode(createUser().getSeed()));
  const seed = readFileSync(nkeyFile, "utf8").trim();
  try {
    return { nkeyFile, publicKey: fromSeed(enc.encode(seed)).getPublicKey() };
  } catch (err) {
    throw new CredentialsError(`${nkeyFile} is not an nkey seed`, { cause: err });
  }
}

/** Every role of a deployment with these hosts and sites. */
export function rolesOf(opts: ProvisionOptions): Role[] {
  return [
    "admin",
    "coordinator",
    "cli",
    "observer",
    ...opts.hosts.flatMap((h) => [moverRole(h), replicationRole(h)]),
    ...(opts.sites ?? []).map(siteRole),
  ];
}

/**
 * Creates what is missing under `dir` (pki/, creds/, trust.json) and returns where everything
 * is. Secrets are written 0600.
 */
export async function provision(dir: string, opts: ProvisionOptions): Promise<Provisioned> {
  const pki = join(dir, "pki");
  const creds = join(dir, "creds");
  mkdirSync(pki, { recursive: true, mode: 0o700 });
  mkdirSync(creds, { recursive: true, mode: 0o700 });
  const { caFile: issuer, ca } = await ensureCa(opts.caDir ?? pki);
  // A shared CA's certificate is copied in (never its key): `dir` alone is what a process needs.
  const caFile = join(pki, "ca.pem");
  if (issuer !== caFile) writeFileSync(caFile, ca.cert, { mode: 0o644 });
  const server = await ensureServerCertificate(pki, ca, opts.serverNames);
  const roles = new Map<Role, RoleCredentials>();
  const trust: TrustFile = { version: 1, principals: {} };
  for (const role of rolesOf(opts)) {
    const host = hostOfRole(role);
    const uris = [roleIdentity(role), ...(host !== undefined ? [hostIdentity(host)] : [])];
    const pair = await ensurePair(pki, role, () =>
      issueCertificate(ca, { commonName: role, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"], uris }),
    );
    const nkey = ensureNkey(creds, role);
    roles.set(role, { role, ...nkey, ...pair });
    // A site's own identity belongs to that site; the other roles serve whichever sites share them.
    const site = siteOfRole(role);
    trust.principals[nkey.publicKey] = {
      role,
      ...(host !== undefined ? { host } : {}),
      ...(site !== undefined ? { site } : {}),
    };
  }
  const trustFile = join(dir, "trust.json");
  writeTrustFile(trustFile, trust);
  return { dir, caFile, server, roles, trustFile };
}

/** Writes a trust file (public: 0644). */
export function writeTrustFile(file: string, trust: TrustFile): void {
  writeFileSync(file, `${JSON.stringify(trust, null, 2)}\n`, { mode: 0o644 });
}

/** The CA in `pkiDir`, created if missing. */
export async function ensureCa(pkiDir: string): Promise<{ caFile: string; ca: KeyPairPem }> {
  mkdirSync(pkiDir, { recursive: true, mode: 0o700 });
  const caFile = join(pkiDir, "ca.pem");
  const caKeyFile = join(pkiDir, "ca.key");
  if (!existsSync(caFile) || !existsSync(caKeyFile)) {
    const created = await createCertificateAuthority("dwcp CA");
    writeSecret(caKeyFile, created.key);
    writeFileSync(caFile, created.cert, { mode: 0o644 });
  }
  return { caFile, ca: { cert: readFileSync(caFile, "utf8"), key: readFileSync(caKeyFile, "utf8") } };
}

/** A nats-server certificate in `pkiDir` (SANs localhost, 127.0.0.1, ::1 and `names`), issued if missing. */
export function ensureServerCertificate(
  pkiDir: string,
  ca: KeyPairPem,
  names: readonly string[] = [],
): Promise<{ certFile: string; keyFile: string }> {
  return ensurePair(pkiDir, "nats-server", () =>
    issueCertificate(ca, {
      commonName: "nats-server",
      dnsNames: ["localhost", ...names.filter((n) => isIP(n) === 0)],
      ipAddresses: ["127.0.0.1", "::1", ...names.filter((n) => isIP(n) !== 0)],
      uris: [roleIdentity("nats-server")],
    }),
  );
}

/** Reads and validates a trust file. */
export function readTrustFile(file: string): TrustFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new CredentialsError(`cannot read trust file ${file}`, { cause: err });
  }
  const parsed = TrustFile.safeParse(raw);
  if (!parsed.success)
    throw new CredentialsError(`${file} is not a dwcp trust file: ${parsed.error.message.slice(0, 500)}`);
  return parsed.data;
}

/** The environment that gives a service process its role's credentials. */
export function roleEnv(p: Provisioned, role: Role): Record<string, string> {
  const r = p.roles.get(role);
  if (r === undefined) throw new CredentialsError(`no credentials were provisioned for role ${role}`);
  return {
    DWCP_TLS_CA: p.caFile,
    DWCP_TLS_CERT: r.certFile,
    DWCP_TLS_KEY: r.keyFile,
    DWCP_NKEY_FILE: r.nkeyFile,
    DWCP_TRUST_FILE: p.trustFile,
  };
}
