import { describe, expect, it } from "vitest";
import { MetricsConfig, isLoopback, metricsInput } from "./config.js";

const parse = (flags: Parameters<typeof metricsInput>[0], env: Record<string, string> = {}) =>
  MetricsConfig.safeParse(metricsInput(flags, env));

describe("metrics listener settings", () => {
  it("are off unless an address is given", () => {
    expect(parse({})).toMatchObject({ success: true, data: undefined });
  });

  it("take the flag over DWCP_METRICS_LISTEN", () => {
    expect(parse({}, { DWCP_METRICS_LISTEN: "127.0.0.1:9464" }).data).toEqual({
      host: "127.0.0.1",
      port: 9464,
      token: undefined,
    });
    expect(parse({ "metrics-listen": "[::1]:9000" }, { DWCP_METRICS_LISTEN: "127.0.0.1:9464" }).data).toEqual({
      host: "::1",
      port: 9000,
      token: undefined,
    });
  });

  it("refuse an address other than loopback without a token file, saying what to do", () => {
    const r = parse({ "metrics-listen": "0.0.0.0:9464" });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.message).toMatch(/not a loopback address: give --metrics-token-file FILE/);
    expect(parse({ "metrics-listen": "10.0.0.5:9464" }).success).toBe(false);
  });

  it("refuse a malformed address and a token file without an address", () => {
    expect(parse({ "metrics-listen": "9464" }).error?.issues[0]?.message).toMatch(/must be HOST:PORT/);
    expect(parse({ "metrics-token-file": "/etc/dwcp/token" }).error?.issues[0]?.message).toMatch(
      /needs --metrics-listen/,
    );
  });

  it("count 127/8, ::1 and localhost as loopback, nothing else", () => {
    for (const h of ["127.0.0.1", "127.100.1.31", "::1", "localhost"]) expect(isLoopback(h), h).toBe(true);
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "127.example.com"]) expect(isLoopback(h), h).toBe(false);
  });
});
