import { createUser, fromPublic } from "@nats-io/nkeys";
import { describe, expect, it } from "vitest";
import { SeedKey } from "./seed-key.js";

describe("an nkey seed through OpenSSL", () => {
  it("gives the library's public key and signatures, for any seed", () => {
    for (let i = 0; i < 20; i++) {
      const kp = createUser();
      const key = new SeedKey(new TextDecoder().decode(kp.getSeed()));
      expect(key.publicKey).toBe(kp.getPublicKey());
      const nonce = `nonce-${i}`;
      const { nkey, sig } = key.authenticator()(nonce);
      expect(nkey).toBe(kp.getPublicKey());
      expect(Buffer.from(sig, "base64")).toEqual(Buffer.from(kp.sign(new TextEncoder().encode(nonce))));
      expect(fromPublic(nkey).verify(new TextEncoder().encode(nonce), Buffer.from(sig, "base64"))).toBe(true);
    }
  });
  it("refuses what is not a seed", () => {
    expect(() => new SeedKey("not a seed")).toThrow();
    expect(() => new SeedKey(createUser().getPublicKey())).toThrow();
  });
});
