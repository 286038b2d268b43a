import { describe, expect, it } from "vitest";
import { isLoopbackAddress, isLoopbackHost } from "./loopback-host.js";

describe("isLoopbackHost", () => {
  it("takes loopback names and addresses, with or without a port", () => {
    for (const h of [
      "localhost",
      "LOCALHOST:8080",
      "127.0.0.1",
      "127.0.0.1:9090",
      "127.1.2.3:1",
      "[::1]",
      "[::1]:9464",
    ])
      expect(isLoopbackHost(h), h).toBe(true);
  });

  it("refuses any other name, a missing header and malformed ones", () => {
    for (const h of [
      undefined,
      "",
      "attacker.example",
      "attacker.example:8080",
      "localhost.attacker.example",
      "127.0.0.1.nip.io",
      "10.0.0.1:80",
      "[::2]:80",
      "::1",
      "127.0.0.1:80:80",
      "[::1]x",
    ])
      expect(isLoopbackHost(h), String(h)).toBe(false);
  });
});

describe("isLoopbackAddress", () => {
  it("takes 127.0.0.0/8, ::1 and IPv4-mapped loopback, nothing else", () => {
    for (const a of ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1", "::FFFF:127.0.0.9"])
      expect(isLoopbackAddress(a), a).toBe(true);
    for (const a of [undefined, "", "10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "fe80::1", "localhost"])
      expect(isLoopbackAddress(a), String(a)).toBe(false);
  });
});
