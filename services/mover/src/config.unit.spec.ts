import { describe, expect, it } from "vitest";
import { moverConfig } from "./config.js";
import { RESUME_WINDOW_MS } from "./domain/data-channel/resume.js";
import { problemsOf } from "../../../test/support/config-problems.js";

describe("mover config: its own problems and the shared ones, listed together", () => {
  it("mover", () => {
    const problems = problemsOf(() =>
      moverConfig(
        { host: "h1", root: ["/tmp"], listen: "nope" },
        { DWCP_SECRET: "short", DWCP_ACK_WAIT_MS: "abc", DWCP_LOCAL_COPY: "no", DWCP_CONCURRENCY: "many" },
      ),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        'listen: --listen must be HOST:PORT, got "nope"',
        expect.stringMatching(/^secret: DWCP_SECRET must be set/),
        "concurrency: must be a whole number of batches",
        'env.DWCP_LOCAL_COPY: must be "on" or "off"',
        "DWCP_ACK_WAIT_MS: must be a whole number of milliseconds",
      ]),
    );
  });

  it("mover defaults", () => {
    const c = moverConfig(
      { host: "h1", root: ["/tmp"] },
      { DWCP_SECRET: "0123456789abcdef", DWCP_DATA_PLAINTEXT: "on" },
    );
    expect(c).toMatchObject({ listenHost: "127.0.0.1", listenPort: 0, advertiseHost: "127.0.0.1" });
    expect(c).toMatchObject({ concurrency: 2, replicas: 1, localCopy: true, nativeRecv: true });
    expect(c.process.ackWaitMs).toBe(30_000);
    // The settings table's default (services/common/settings.ts) is the data channel's window.
    expect(c.resumeWindowMs).toBe(RESUME_WINDOW_MS);
    expect(Object.isFrozen(c)).toBe(true);
    expect(c.link).toEqual({ mode: "plaintext" });
    expect(c).toMatchObject({ standby: false, leaseHeartbeatMs: 5_000, leaseTtlMs: 15_000 });
  });

  it("mover host lease: --standby, a heartbeat and a TTL of at least two heartbeats", () => {
    const env = { DWCP_SECRET: "0123456789abcdef", DWCP_DATA_PLAINTEXT: "on", DWCP_LEASE_HEARTBEAT_MS: "1000" };
    const c = moverConfig({ host: "h1", root: ["/tmp"], standby: true }, env);
    expect(c).toMatchObject({ standby: true, leaseHeartbeatMs: 1_000, leaseTtlMs: 3_000 });
    expect(
      problemsOf(() => moverConfig({ host: "h1", root: ["/tmp"] }, { ...env, DWCP_LEASE_TTL_MS: "1500" })),
    ).toEqual(["leaseTtlMs: DWCP_LEASE_TTL_MS must be at least two heartbeats (DWCP_LEASE_HEARTBEAT_MS)"]);
  });

  it("mover without TLS material or the explicit plaintext setting refuses to start", () => {
    const env = { DWCP_SECRET: "0123456789abcdef", DWCP_TLS_CA: "/x/ca.pem" };
    expect(problemsOf(() => moverConfig({ host: "h1", root: ["/tmp"] }, env))).toEqual([
      expect.stringMatching(/^tls: the data link needs DWCP_TLS_CA, DWCP_TLS_CERT and DWCP_TLS_KEY .*only DWCP_TLS_CA/),
    ]);
    const c = moverConfig({ host: "h1", root: ["/tmp"], "plaintext-data": true }, env);
    expect(c.link).toEqual({ mode: "plaintext" });
  });
});
