import { createPrivateKey, createPublicKey, sign as ed25519Sign, type KeyObject } from "node:crypto";

// An nkey seed used through OpenSSL. The nkey library signs in pure JavaScript (tweetnacl) and
// derives the key pair from the seed on every call: ~10 ms each on an idle machine of this kind
// and hundreds of ms under load, paid by every CLI command when it authenticates to NATS. Ed25519
// is deterministic, so OpenSSL makes the same keys and signatures from the same seed (the unit
// spec pins both against the library).

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/** DER prefixes of an Ed25519 private key (PKCS#8) and public key (SPKI) around the raw 32 bytes. */
export const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");
export const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");

/** RFC 4648 base32 without padding, as nkeys encodes keys. */
export function base32Decode(s: string): Buffer {
  const out: number[] = [];
  let bits = 0;
  let acc = 0;
  for (const ch of s) {
    const v = BASE32.indexOf(ch);
    if (v < 0) throw new RangeError("not base32");
    acc = ((acc << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function base32Encode(bytes: Uint8Array): string {
  let out = "";
  let bits = 0;
  let acc = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(acc >> bits) & 31];
    }
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

/** CRC-16/XMODEM, the checksum nkeys appends to a key. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** One role's nkey seed (the text of a .nk file): its public key and Ed25519 signatures. */
export class SeedKey {
  readonly publicKey: string;
  readonly privateKey: KeyObject;
  readonly verifyKey: KeyObject;

  constructor(seed: string) {
    // Two prefix bytes (seed kind and the key's role), the 32-byte Ed25519 seed, a 2-byte CRC.
    const raw = base32Decode(seed.trim());
    if (raw.length !== 36) throw new RangeError("not an nkey seed");
    const role = ((raw[0]! & 7) << 5) | ((raw[1]! & 0xf8) >> 3);
    this.privateKey = createPrivateKey({
      key: Buffer.concat([PKCS8_ED25519, raw.subarray(2, 34)]),
      format: "der",
      type: "pkcs8",
    });
    this.verifyKey = createPublicKey(this.privateKey);
    const spki = this.verifyKey.export({ format: "der", type: "spki" });
    const body = Buffer.concat([Buffer.from([role]), spki.subarray(SPKI_ED25519.length)]);
    const crc = crc16(body);
    this.publicKey = base32Encode(Buffer.concat([body, Buffer.from([crc & 0xff, crc >> 8])]));
  }

  sign(bytes: Uint8Array): Buffer {
    return ed25519Sign(null, bytes, this.privateKey);
  }

  /** A NATS authenticator answering the server's nonce with this key (what nkeyAuthenticator does). */
  authenticator(): (nonce?: string) => { nkey: string; sig: string } {
    return (nonce) => ({
      nkey: this.publicKey,
      sig: nonce ? this.sign(new TextEncoder().encode(nonce)).toString("base64") : "",
    });
  }
}
