import { describe, expect, it } from "vitest";
import { processConfig } from "./config.js";
import { ConfigError } from "./errors.js";
import { serviceCredentials } from "./nats.js";

describe("a service's NATS credentials", () => {
  it("come from DWCP_NKEY_FILE and DWCP_TLS_*, with the role's inbox", () => {
    const cfg = processConfig({
      DWCP_NKEY_FILE: "/d/creds/mover-a.nk",
      DWCP_TLS_CA: "/d/pki/ca.pem",
      DWCP_TLS_CERT: "/d/pki/mover-a.pem",
      DWCP_TLS_KEY: "/d/pki/mover-a.key",
    });
    expect(serviceCredentials(cfg, "mover-a")).toEqual({
      role: "mover-a",
      nkeyFile: "/d/creds/mover-a.nk",
      caFile: "/d/pki/ca.pem",
      certFile: "/d/pki/mover-a.pem",
      keyFile: "/d/pki/mover-a.key",
    });
  });

  it("are required: a service without them refuses to start and says what is missing", () => {
    const cfg = processConfig({ DWCP_NKEY_FILE: "/d/creds/coordinator.nk" });
    let err: unknown;
    try {
      serviceCredentials(cfg, "coordinator");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems.map((p) => p.split(":")[0])).toEqual(["DWCP_TLS_CA", "DWCP_TLS_CERT", "DWCP_TLS_KEY"]);
    expect(problems[0]).toContain("DWCP_NATS_INSECURE=on");
  });

  it("DWCP_NATS_INSECURE=on connects without them, and says so", () => {
    const warnings: string[] = [];
    const log = { warn: (_o: unknown, msg: string) => warnings.push(msg) };
    const cfg = processConfig({ DWCP_NATS_INSECURE: "on" });
    expect(serviceCredentials(cfg, "coordinator", log as never)).toBeUndefined();
    expect(warnings[0]).toMatch(/DWCP_NATS_INSECURE=on: connecting to NATS without credentials or TLS/);
    expect(() => processConfig({ DWCP_NATS_INSECURE: "yes" })).toThrow(ConfigError);
  });
});
