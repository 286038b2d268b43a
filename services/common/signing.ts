import {
  createHash,
  createHmac,
  createPublicKey,
  sign as ed25519Sign,
  verify as ed25519Verify,
  type KeyObject,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { fromPublic, fromSeed, type KeyPair } from "@nats-io/nkeys";
import { processSetting } from "./config.js";
import { readTrustFile, type TrustFile } from "./credentials/provision.js";
import { base32Decode, SeedKey, SPKI_ED25519 } from "./seed-key.js";
import { DwcpError } from "./errors.js";

// Every event is signed with its producer's role key (the role's NATS nkey, ed25519), so a reader
// knows who wrote it no matter which path the message took: the NATS user that published it, a
// sourced stream of another site, or a backup restored with restore-log. The signature travels
// in two headers and covers the subject, the msgID and a SHA-256 of the payload, so it cannot be
// moved to another aggregate, another dedup id or another body.

/** Public nkey (U...) of the producer. */
export const PRINCIPAL_HEADER = "Dwcp-Principal";
/** base64url ed25519 signature over signedBytes(subject, msgID, payload). */
export const SIGNATURE_HEADER = "Dwcp-Sig";
/** Where restore-log keeps a restored message's original Nats-Msg-Id (replication's backup format). */
export const ORIGINAL_MSG_ID_HEADER = "Dwcp-Orig-Msg-Id";

const SIGNATURE_CONTEXT = "dwcp-evt-v1";
const MSG_ID_CONTEXT = "dwcp-msgid-v1";

/** Who produced an event, as the trust file names its key. */
export interface Principal {
  /** Public nkey (U...). */
  key: string;
  /** coordinator, mover-<h>, replication-<h>, site-<s>, cli, ... */
  role: string;
  /** The host a mover or replication role runs for. */
  host?: string;
  /** The federation site whose server knows the key (a federation's trust file). */
  site?: string;
}

export type UnverifiedReason = "unsigned" | "unknown signer" | "bad signature" | "not checked";

/**
 * What a reader knows about an event's producer: `signed` by a principal of the trust file;
 * `insecure` when the reader runs with DWCP_EVENTS_UNSIGNED=on and takes every event as it is;
 * `unverified` otherwise, with the reason (never folded by a trusting reader).
 */
export type Provenance =
  | { kind: "signed"; principal: Principal }
  | { kind: "insecure" }
  | { kind: "unverified"; reason: UnverifiedReason };

/** The bytes an event's signature covers. */
export function signedBytes(subject: string, msgID: string, payload: Uint8Array): Uint8Array {
  const digest = createHash("sha256").update(payload).digest("hex");
  return new TextEncoder().encode(`${SIGNATURE_CONTEXT}\n${subject}\n${msgID}\n${digest}`);
}

// The nkey libraries sign and verify in pure JavaScript (tweetnacl), which re-derives the key pair
// from the seed on every signature: ~10 ms per signature and ~5 ms per check on this machine,
// most of a coordinator's CPU. Ed25519 is deterministic, so OpenSSL's makes the same signatures
// from the same seed (the unit spec pins it) at a fraction of the cost.

/** The OpenSSL key of a public nkey (checked by nkeys: prefix and CRC). */
function ed25519PublicKey(nkey: string): KeyObject {
  fromPublic(nkey);
  // One prefix byte, the 32-byte key, a 2-byte CRC.
  const raw = base32Decode(nkey).subarray(1, 33);
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: "der", type: "spki" });
}

/** The headers of a message, read-only (the client's MsgHdrs fits). */
export interface HeaderReader {
  get(name: string): string;
}

/** A signing key could not be loaded, or a service has neither keys nor the insecure setting. */
export class EventTrustConfigError extends DwcpError {
  readonly code = "EVENT_TRUST_CONFIG";
  readonly retryable = false;
}

/**
 * Signatures known to be valid for (key, signed bytes): made by this process's own key, or
 * checked once already. Ed25519 validity is a function of those three alone, so a reader that
 * finds the same triple again knows the answer without the curve arithmetic: a coordinator folds
 * three of each small migration's four events from its own appends. Bounded; the oldest go first.
 */
export class KnownSignatures {
  private readonly known = new Map<string, Uint8Array>();

  constructor(private readonly max = 8_192) {}

  add(key: string, sig: string, bytes: Uint8Array): void {
    const id = `${key}:${sig}`;
    this.known.delete(id);
    this.known.set(id, bytes);
    if (this.known.size > this.max) this.known.delete(this.known.keys().next().value as string);
  }

  has(key: string, sig: string, bytes: Uint8Array): boolean {
    const seen = this.known.get(`${key}:${sig}`);
    return seen !== undefined && Buffer.compare(seen, bytes) === 0;
  }
}

/** Signs events with one role's nkey. */
export class EventSigner {
  readonly publicKey: string;
  /** Where each signature made here is remembered as valid (the process's verifier reads it). */
  known: KnownSignatures | undefined;
  private readonly msgIdKey: Buffer;
  private readonly privateKey: KeyObject;
  private readonly verifyKey: KeyObject;

  /** A key pair (tests) or the text of a seed; the key is used through OpenSSL (seed-key.ts). */
  constructor(kp: KeyPair | string) {
    const seed = typeof kp === "string" ? kp.trim() : new TextDecoder().decode(kp.getSeed());
    const key = new SeedKey(seed);
    this.publicKey = key.publicKey;
    this.privateKey = key.privateKey;
    this.verifyKey = key.verifyKey;
    // A key for msgIDs only, derived from the seed: nobody without the seed can predict them.
    this.msgIdKey = createHash("sha256").update(MSG_ID_CONTEXT).update(new TextEncoder().encode(seed)).digest();
  }

  static fromSeedFile(file: string): EventSigner {
    try {
      const text = readFileSync(file, "utf8").trim();
      fromSeed(new TextEncoder().encode(text)); // checks the seed's prefix and CRC
      return new EventSigner(text);
    } catch (err) {
      throw new EventTrustConfigError(`${file} is not a readable nkey seed file`, { cause: err });
    }
  }

  /** The signature headers for one message. */
  sign(subject: string, msgID: string, payload: Uint8Array): Array<[string, string]> {
    const bytes = signedBytes(subject, msgID, payload);
    const sig = ed25519Sign(null, bytes, this.privateKey).toString("base64url");
    this.known?.add(this.publicKey, sig, bytes);
    return [
      [PRINCIPAL_HEADER, this.publicKey],
      [SIGNATURE_HEADER, sig],
    ];
  }

  /** Whether a stored message carries this key's valid signature for (subject, msgID). */
  signed(subject: string, msgID: string, headers: HeaderReader | undefined, payload: Uint8Array): boolean {
    const sig = headers?.get(SIGNATURE_HEADER) ?? "";
    if (headers?.get(PRINCIPAL_HEADER) !== this.publicKey || sig === "") return false;
    try {
      return ed25519Verify(null, signedBytes(subject, msgID, payload), this.verifyKey, Buffer.from(sig, "base64url"));
    } catch {
      return false;
    }
  }

  /**
   * The msgID to publish for a dedup base: the base plus a keyed tag, the same for every retry of
   * the same base by a holder of this key (dedup still works) and unpredictable to anyone else
   * (no one can publish first under it and squat it).
   */
  msgId(base: string): string {
    const tag = createHmac("sha256", this.msgIdKey).update(base).digest("base64url").slice(0, 16);
    return `${base}.k${tag}`;
  }
}

/** Checks event signatures against the trust file's principals. */
export class EventVerifier {
  private readonly keys = new Map<string, KeyObject>();
  /** Valid signatures seen before (checked here, or made by this process's signer). */
  readonly known = new KnownSignatures();

  constructor(private readonly trust: TrustFile) {}

  static fromTrustFile(file: string): EventVerifier {
    try {
      return new EventVerifier(readTrustFile(file));
    } catch (err) {
      throw new EventTrustConfigError(`cannot use trust file ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The principal of a public key, if the trust file names it. */
  principalOf(key: string): Principal | undefined {
    const p = this.trust.principals[key];
    if (!p) return undefined;
    return {
      key,
      role: p.role,
      ...(p.host !== undefined ? { host: p.host } : {}),
      ...(p.site !== undefined ? { site: p.site } : {}),
    };
  }

  verify(subject: string, headers: HeaderReader | undefined, payload: Uint8Array): Provenance {
    const key = headers?.get(PRINCIPAL_HEADER) ?? "";
    const sig = headers?.get(SIGNATURE_HEADER) ?? "";
    if (key === "" || sig === "") return { kind: "unverified", reason: "unsigned" };
    const principal = this.principalOf(key);
    if (!principal) return { kind: "unverified", reason: "unknown signer" };
    const msgID = headers?.get("Nats-Msg-Id") || headers?.get(ORIGINAL_MSG_ID_HEADER) || "";
    const bytes = signedBytes(subject, msgID, payload);
    if (this.known.has(key, sig, bytes)) return { kind: "signed", principal };
    let pub = this.keys.get(key);
    try {
      pub ??= ed25519PublicKey(key);
      this.keys.set(key, pub);
      const ok = ed25519Verify(null, bytes, pub, Buffer.from(sig, "base64url"));
      if (!ok) return { kind: "unverified", reason: "bad signature" };
      this.known.add(key, sig, bytes);
      return { kind: "signed", principal };
    } catch {
      return { kind: "unverified", reason: "bad signature" };
    }
  }
}

/**
 * How a process signs and reads events. `insecure`: DWCP_EVENTS_UNSIGNED=on, nothing signed and
 * every event taken as it is (a trusted test bench); else a signer (for producers) and a verifier.
 */
export interface EventTrust {
  signer?: EventSigner;
  verifier?: EventVerifier;
  insecure: boolean;
}

/** Reads events without trusting them: every event comes out `unverified: not checked`. */
export const UNCHECKED: EventTrust = Object.freeze({ insecure: false });
/** DWCP_EVENTS_UNSIGNED=on: signs nothing, takes every event. */
export const INSECURE: EventTrust = Object.freeze({ insecure: true });

/** What a reader makes of a message's headers. */
export function provenanceOf(
  trust: EventTrust,
  subject: string,
  headers: HeaderReader | undefined,
  payload: Uint8Array,
): Provenance {
  if (trust.insecure) return { kind: "insecure" };
  if (!trust.verifier) return { kind: "unverified", reason: "not checked" };
  return trust.verifier.verify(subject, headers, payload);
}

export interface EventTrustSettings {
  /** The role's nkey seed file (signs what this process appends). DWCP_NKEY_FILE. */
  nkeyFile: string | undefined;
  /** trust.json (who each public key is). DWCP_TRUST_FILE. */
  trustFile: string | undefined;
  /** "on": sign nothing and take every event unverified. DWCP_EVENTS_UNSIGNED, default "off". */
  unsigned: boolean;
}

/** The event-trust settings from the environment (config.ts; empty variables count as unset). */
export function eventTrustSettings(env: Record<string, string | undefined> = process.env): EventTrustSettings {
  return {
    nkeyFile: processSetting("nkeyFile", env),
    trustFile: processSetting("trustFile", env),
    unsigned: processSetting("eventsUnsigned", env) === "on",
  };
}

/**
 * A service's event trust, secure by default: without a key and a trust file it refuses to start
 * unless DWCP_EVENTS_UNSIGNED=on, which `warn` reports. `needsKey`: false for read-only processes.
 */
export function loadEventTrust(
  s: EventTrustSettings,
  o: { warn?: (msg: string) => void; needsKey?: boolean } = {},
): EventTrust {
  if (s.unsigned) {
    o.warn?.("DWCP_EVENTS_UNSIGNED=on: events are neither signed nor verified; any NATS client can forge them");
    return INSECURE;
  }
  const needsKey = o.needsKey ?? true;
  const missing = [
    ...(needsKey && s.nkeyFile === undefined ? ["DWCP_NKEY_FILE (the role's nkey seed, signs events)"] : []),
    ...(s.trustFile === undefined ? ["DWCP_TRUST_FILE (trust.json, verifies events)"] : []),
  ];
  if (missing.length > 0)
    throw new EventTrustConfigError(
      `events must be signed and verified: set ${missing.join(" and ")}, or DWCP_EVENTS_UNSIGNED=on for an ` +
        "unauthenticated test bench",
    );
  const verifier = EventVerifier.fromTrustFile(s.trustFile as string);
  const signer = s.nkeyFile !== undefined ? EventSigner.fromSeedFile(s.nkeyFile) : undefined;
  // What this process signs, it need not check again when it reads it back.
  if (signer !== undefined) signer.known = verifier.known;
  return { insecure: false, ...(signer !== undefined ? { signer } : {}), verifier };
}

let processTrust: EventTrust | undefined;

/**
 * This process's event trust from its environment, loaded once; services call it at start-up
 * (so a missing key fails there), stores built later reuse it.
 */
export function processEventTrust(o: { warn?: (msg: string) => void; needsKey?: boolean } = {}): EventTrust {
  processTrust ??= loadEventTrust(eventTrustSettings(), o);
  return processTrust;
}

/**
 * For stores built deep inside a library (replication log, federation log): the process's event
 * trust when its environment configures one, else INSECURE for in-process use (tests, the drill).
 * Every service entry point calls processEventTrust() first, so a service never gets here
 * unconfigured.
 */
export function configuredEventTrust(): EventTrust {
  const s = eventTrustSettings();
  return s.unsigned || s.nkeyFile !== undefined || s.trustFile !== undefined ? processEventTrust() : INSECURE;
}
