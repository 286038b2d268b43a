import { describe, expect, it } from "vitest";
import { isLoopbackHost } from "./loopback-host.js";

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
