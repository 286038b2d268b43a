import { describe, expect, it } from "vitest";
import { processConfig, processSetting } from "./config.js";
import { ConfigError } from "./errors.js";
import { problemsOf } from "../../test/support/config-problems.js";

describe("process settings from the environment", () => {
  it("defaults, frozen", () => {
    const c = processConfig({});
    expect(c).toEqual({
      natsUrl: "nats://127.0.0.1:4222",
      logLevel: "info",
      directIo: "auto",
      ackWaitMs: 30_000,
      connectTimeoutMs: 5000,
      natsServer: undefined,
      natsDownLimitMs: 0,
      native: "auto",
      nkeyFile: undefined,
      tlsCa: undefined,
      tlsCert: undefined,
      tlsKey: undefined,
      natsInsecure: "off",
      trustFile: undefined,
      eventsUnsigned: "off",
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("DWCP_ACK_WAIT_MS=abc is a ConfigError that names the variable, not NaN", () => {
    expect(() => processSetting("ackWaitMs", { DWCP_ACK_WAIT_MS: "abc" })).toThrow(ConfigError);
    expect(problemsOf(() => processSetting("ackWaitMs", { DWCP_ACK_WAIT_MS: "abc" }))).toEqual([
      "DWCP_ACK_WAIT_MS: must be a whole number of milliseconds",
    ]);
    expect(processSetting("ackWaitMs", { DWCP_ACK_WAIT_MS: "2500" })).toBe(2500);
    expect(processSetting("ackWaitMs", { DWCP_ACK_WAIT_MS: "" })).toBe(30_000);
  });

  it("lists every bad variable at once", () => {
    const problems = problemsOf(() =>
      processConfig({ DWCP_ACK_WAIT_MS: "1.5", DWCP_DIRECT_IO: "sometimes", DWCP_LOG_LEVEL: "loud", DWCP_NATIVE: "x" }),
    );
    expect(problems.map((p) => p.slice(0, p.indexOf(":"))).sort()).toEqual([
      "DWCP_ACK_WAIT_MS",
      "DWCP_DIRECT_IO",
      "DWCP_LOG_LEVEL",
      "DWCP_NATIVE",
    ]);
    expect(problems.some((p) => p.startsWith('DWCP_DIRECT_IO: must be "auto", "on" or "off"'))).toBe(true);
  });

  it("one setting is read alone: a bad variable elsewhere does not fail it", () => {
    expect(processSetting("directIo", { DWCP_DIRECT_IO: "on", DWCP_ACK_WAIT_MS: "abc" })).toBe("on");
  });
});
