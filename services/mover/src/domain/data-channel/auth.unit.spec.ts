import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseAddress, formatAddress } from "./address.js";
import { helloMac, helloNonce, migrationToken, verifyHelloMac } from "./auth.js";
import { newTokenBucket, reserve } from "./token-bucket.js";

const secret = Buffer.from("cluster-secret-for-tests-0123456789");
const nonce = Buffer.alloc(32, 0x5a);

describe("data channel authentication", () => {
  it("derives the token as HMAC-SHA256(secret, 'dwcp/v1/migration/' + id)", () => {
    const expected = createHmac("sha256", secret).update("dwcp/v1/migration/m-1").digest();
    expect(migrationToken(secret, "m-1").equals(expected)).toBe(true);
    expect(migrationToken(secret, "m-2").equals(expected)).toBe(false);
  });

  it("computes the HELLO MAC over nonce || migrationId || sourceHost, keyed by the token", () => {
    const token = migrationToken(secret, "m-1");
    const expected = createHmac("sha256", token)
      .update(Buffer.concat([nonce, Buffer.from("m-1host-a")]))
      .digest();
    expect(helloMac(token, nonce, "m-1", "host-a").equals(expected)).toBe(true);
  });

  it("accepts the right MAC and refuses every altered input", () => {
    const mac = helloMac(migrationToken(secret, "m-1"), nonce, "m-1", "host-a");
    const hello = { migrationId: "m-1", sourceHost: "host-a", mac };
    expect(verifyHelloMac(secret, nonce, hello)).toBe(true);
    expect(verifyHelloMac(Buffer.from("other secret"), nonce, hello)).toBe(false);
    expect(verifyHelloMac(secret, Buffer.alloc(32, 1), hello)).toBe(false);
    expect(verifyHelloMac(secret, nonce, { ...hello, migrationId: "m-2" })).toBe(false);
    expect(verifyHelloMac(secret, nonce, { ...hello, sourceHost: "host-b" })).toBe(false);
    expect(verifyHelloMac(secret, nonce, { ...hello, mac: mac.subarray(0, 31) })).toBe(false);
    const flipped = Buffer.from(mac);
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    expect(verifyHelloMac(secret, nonce, { ...hello, mac: flipped })).toBe(false);
  });
});

describe("re-authentication nonces", () => {
  it("answers the challenge itself first, then HMAC-SHA256(challenge, 'dwcp/v1/rehello/' + n), each distinct", () => {
    expect(helloNonce(nonce, 0)).toBe(nonce);
    const expected = createHmac("sha256", nonce).update("dwcp/v1/rehello/1").digest();
    expect(Buffer.from(helloNonce(nonce, 1)).equals(expected)).toBe(true);
    const seen = new Set([0, 1, 2, 3].map((n) => Buffer.from(helloNonce(nonce, n)).toString("hex")));
    expect(seen.size).toBe(4);
    // A MAC for one nonce of a link does not verify against another.
    const mac = helloMac(migrationToken(secret, "m-1"), helloNonce(nonce, 1), "m-1", "host-a");
    expect(verifyHelloMac(secret, helloNonce(nonce, 1), { migrationId: "m-1", sourceHost: "host-a", mac })).toBe(true);
    expect(verifyHelloMac(secret, helloNonce(nonce, 2), { migrationId: "m-1", sourceHost: "host-a", mac })).toBe(false);
  });
});

describe("token bucket", () => {
  it("lets the burst through and then paces to the rate", () => {
    const b = newTokenBucket(1000, 0, 100);
    expect(reserve(b, 100, 0)).toBe(0);
    expect(reserve(b, 500, 0)).toBe(500);
    // 500 ms later the debt is paid; the next 1000 bytes need a further second.
    expect(reserve(b, 1000, 500)).toBe(1000);
  });

  it("never accumulates more than the burst while idle", () => {
    const b = newTokenBucket(1000, 0, 100);
    expect(reserve(b, 1100, 60_000)).toBe(1000);
  });
});

describe("addresses", () => {
  it("parses host:port and [v6]:port", () => {
    expect(parseAddress("127.0.0.1:4222")).toEqual({ host: "127.0.0.1", port: 4222 });
    expect(parseAddress("[::1]:80")).toEqual({ host: "::1", port: 80 });
    expect(parseAddress("mover-b.example:7000")).toEqual({ host: "mover-b.example", port: 7000 });
    for (const bad of ["b", "b:", ":1", "h:0", "h:70000", "::1:80"]) expect(parseAddress(bad)).toBeUndefined();
    expect(formatAddress("::1", 80)).toBe("[::1]:80");
  });
});
