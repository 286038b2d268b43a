import { webcrypto, X509Certificate, type webcrypto as WebCrypto } from "node:crypto";
import type * as X509 from "@peculiar/x509";
import { DwcpError } from "./errors.js";

// Certificates for dwcp's links: one CA per deployment (or `dwcp up` data dir) issues a server
// certificate for each nats-server and a certificate per identity (a role, a host), which serves
// as both TLS client and server certificate. Keys are ECDSA P-256: every TLS 1.3 stack takes it,
// and Node signs and verifies it natively.

let x509Lib: Promise<typeof X509> | undefined;

/**
 * @peculiar/x509, loaded when a certificate is first made: a process that only reads certificates
 * (a CLI command) does not pay its ~0.2 s load. It resolves its ASN.1 codecs through tsyringe,
 * which needs the Reflect metadata API.
 */
function x509Of(): Promise<typeof X509> {
  x509Lib ??= (async () => {
    await import("reflect-metadata");
    const lib = await import("@peculiar/x509");
    lib.cryptoProvider.set(webcrypto);
    return lib;
  })();
  return x509Lib;
}

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

/** A certificate and its private key, both PEM. */
export interface KeyPairPem {
  cert: string;
  key: string;
}

/** The CA: its certificate signs, its key stays with whoever provisions. */
export type CertificateAuthority = KeyPairPem;

export interface IssueOptions {
  /** The certificate's subject common name and identity (e.g. "mover-a", "nats-server"). */
  commonName: string;
  /** DNS names for the subjectAltName (e.g. "localhost"). */
  dnsNames?: string[];
  /** IP addresses for the subjectAltName (e.g. "127.0.0.1"). */
  ipAddresses?: string[];
  /**
   * URIs for the subjectAltName: a dwcp identity is `dwcp:host:<id>` or `dwcp:role:<name>`, which
   * the data channel checks against the host the coordinator named.
   */
  uris?: string[];
  /** Validity from now, in days. Default 825. */
  validDays?: number;
}

/** A certificate or key in the wrong form, or signed by another CA. */
export class CertificateError extends DwcpError {
  readonly code = "CERTIFICATE_INVALID";
  readonly retryable = false;
}

const serial = (): string =>
  Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString("hex")
    .replace(/^[89a-f]/, "1");

async function keyPem(key: WebCrypto.CryptoKey): Promise<string> {
  const x509 = await x509Of();
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

/** A new self-signed CA, valid for `validDays` (default 3650). */
export async function createCertificateAuthority(name: string, validDays = 3650): Promise<CertificateAuthority> {
  const x509 = await x509Of();
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + validDays * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: await keyPem(keys.privateKey) };
}

async function importCa(ca: CertificateAuthority): Promise<{ cert: X509.X509Certificate; key: WebCrypto.CryptoKey }> {
  const x509 = await x509Of();
  try {
    const cert = new x509.X509Certificate(ca.cert);
    const der = x509.PemConverter.decodeFirst(ca.key);
    const key = await webcrypto.subtle.importKey("pkcs8", der, ALGORITHM, false, ["sign"]);
    return { cert, key };
  } catch (err) {
    throw new CertificateError("the CA certificate or key is not a PEM ECDSA P-256 pair", { cause: err });
  }
}

/** A leaf certificate for `opts.commonName`, usable as TLS server and client, signed by `ca`. */
export async function issueCertificate(ca: CertificateAuthority, opts: IssueOptions): Promise<KeyPairPem> {
  const x509 = await x509Of();
  const issuer = await importCa(ca);
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const now = Date.now();
  const altNames: X509.JsonGeneralName[] = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
    ...(opts.uris ?? []).map((value) => ({ type: "url" as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.commonName}`,
    issuer: issuer.cert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (opts.validDays ?? 825) * DAY_MS),
    signingKey: issuer.key,
    publicKey: keys.publicKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      ...(altNames.length > 0 ? [new x509.SubjectAlternativeNameExtension(altNames)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.cert),
    ],
  });
  return { cert: cert.toString("pem"), key: await keyPem(keys.privateKey) };
}

/** The dwcp identities (`dwcp:...` URIs) a peer certificate names in its subjectAltName. */
export function identitiesOf(certPem: string | Buffer): string[] {
  const alt = new X509Certificate(certPem).subjectAltName ?? "";
  return alt
    .split(", ")
    .filter((s) => s.startsWith("URI:dwcp:"))
    .map((s) => s.slice("URI:".length));
}

/** The identity URI of a host (a mover, a replication agent) in its certificate. */
export const hostIdentity = (host: string): string => `dwcp:host:${host}`;
/** The identity URI of a role (coordinator, cli, ...) in its certificate. */
export const roleIdentity = (role: string): string => `dwcp:role:${role}`;
