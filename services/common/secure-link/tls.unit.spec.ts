import { describe, expect, it } from "vitest";
import { hostsOf, LinkSecurityEnv, linkSecurityProblems, linkSecuritySetting } from "./tls.js";
import { isTlsFailure } from "./transport.js";

const env = (e: Record<string, string>) => LinkSecurityEnv.parse(e);

describe("link security settings", () => {
  it("needs all three TLS files, or plaintext by explicit choice", () => {
    const full = env({ DWCP_TLS_CA: "/p/ca.pem", DWCP_TLS_CERT: "/p/m.pem", DWCP_TLS_KEY: "/p/m.key" });
    expect(linkSecuritySetting(full)).toEqual({
      mode: "tls",
      caFile: "/p/ca.pem",
      certFile: "/p/m.pem",
      keyFile: "/p/m.key",
    });
    expect(linkSecuritySetting(env({ DWCP_DATA_PLAINTEXT: "on" }))).toEqual({ mode: "plaintext" });
    expect(linkSecuritySetting(full, true)).toEqual({ mode: "plaintext" });
    const partial = env({ DWCP_TLS_CERT: "/p/m.pem" });
    expect(linkSecuritySetting(partial)).toEqual({ mode: "none" });
    expect(linkSecurityProblems(linkSecuritySetting(partial), partial)).toEqual([
      expect.stringMatching(/DWCP_DATA_PLAINTEXT=on .*\(only DWCP_TLS_CERT is set\)$/),
    ]);
    expect(linkSecurityProblems(linkSecuritySetting(full), full)).toEqual([]);
  });

  it("reads hosts from dwcp identities", () => {
    expect(hostsOf(["dwcp:role:mover-a", "dwcp:host:a", "dwcp:host:b"])).toEqual(["a", "b"]);
  });

  it("tells TLS failures from network ones", () => {
    expect(isTlsFailure({ code: "ERR_SSL_WRONG_VERSION_NUMBER" })).toBe(true);
    expect(isTlsFailure({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" })).toBe(true);
    expect(isTlsFailure({ code: "ECONNRESET" })).toBe(false);
    expect(isTlsFailure(undefined)).toBe(false);
  });
});
