import { describe, expect, it } from "vitest";
import { processConfig } from "./config.js";
import { effectiveSettings, settingInput, SETTINGS, UNIQUE_FLAGS, type Setting } from "./settings.js";

const entry = (variable: string, list: ReturnType<typeof effectiveSettings>) =>
  list.find((e) => e.setting.env === variable);

describe("settings: file < environment < flags, implemented once", () => {
  const file = { path: "/etc/dwcp/dwcp.toml", values: { DWCP_MAX_ATTEMPTS: "9", DWCP_CONCURRENCY: "3" } };

  it("takes the file where neither the environment nor a flag sets a value", () => {
    const e = effectiveSettings({ env: {}, file });
    expect(entry("DWCP_MAX_ATTEMPTS", e)).toMatchObject({ value: "9", from: { source: "file", path: file.path } });
    expect(entry("DWCP_BACKOFF_MAX_MS", e)).toMatchObject({ value: "30000", from: { source: "default" } });
    expect(entry("DWCP_SECRET", e)).toMatchObject({ value: undefined, from: { source: "default" } });
  });

  it("lets the environment win over the file, and a flag over both; empty variables are unset", () => {
    const env = { DWCP_MAX_ATTEMPTS: "4", DWCP_CONCURRENCY: "5", DWCP_REPLICAS: "" };
    const e = effectiveSettings({ env, file, flags: { DWCP_CONCURRENCY: "7" } });
    expect(entry("DWCP_MAX_ATTEMPTS", e)).toMatchObject({ value: "4", from: { source: "env" } });
    expect(entry("DWCP_CONCURRENCY", e)).toMatchObject({ value: "7", from: { source: "flag", flag: "--concurrency" } });
    expect(entry("DWCP_REPLICAS", e)).toMatchObject({ value: "1", from: { source: "default" } });
  });

  it("gives loaders the flag, else the variable, else the declared default", () => {
    expect(settingInput("DWCP_CONCURRENCY", { DWCP_CONCURRENCY: "5" }, "7")).toBe("7");
    expect(settingInput("DWCP_CONCURRENCY", { DWCP_CONCURRENCY: "5" })).toBe("5");
    expect(settingInput("DWCP_CONCURRENCY", { DWCP_CONCURRENCY: "" })).toBe("2");
    expect(settingInput("DWCP_ADVERTISE", {})).toBeUndefined();
  });
});

describe("the settings table", () => {
  it("declares each key and variable once, and every key as section.name", () => {
    const list = SETTINGS as readonly Setting[];
    expect(new Set(list.map((s) => s.key)).size).toBe(list.length);
    expect(new Set(list.map((s) => s.env)).size).toBe(list.length);
    for (const s of list) {
      expect(s.key).toMatch(/^[a-z]+\.[a-z_]+$/);
      expect(s.help.length, s.key).toBeGreaterThan(5);
      expect(s.readBy.length, s.key).toBeGreaterThan(0);
    }
  });

  it("has the defaults the shared schema has", () => {
    const shared = processConfig({});
    const table = (v: string) => (SETTINGS as readonly Setting[]).find((s) => s.env === v)?.default;
    expect(table("DWCP_NATS_URL")).toBe(shared.natsUrl);
    expect(table("DWCP_LOG_LEVEL")).toBe(shared.logLevel);
    expect(table("DWCP_DIRECT_IO")).toBe(shared.directIo);
    expect(table("DWCP_ACK_WAIT_MS")).toBe(String(shared.ackWaitMs));
    expect(table("DWCP_NATS_DOWN_LIMIT_MS")).toBe(String(shared.natsDownLimitMs));
    expect(table("DWCP_NATIVE")).toBe(shared.native);
    expect(table("DWCP_NATS_INSECURE")).toBe(shared.natsInsecure);
    expect(table("DWCP_EVENTS_UNSIGNED")).toBe(shared.eventsUnsigned);
    expect(table("DWCP_CONNECT_TIMEOUT_MS")).toBe(String(shared.connectTimeoutMs));
  });

  it("marks secrets, keys and token files secret", () => {
    const secret = (SETTINGS as readonly Setting[]).filter((s) => s.secret === true).map((s) => s.env);
    expect(secret.sort()).toEqual(
      ["DWCP_BACKUP_KEY", "DWCP_METRICS_TOKEN_FILE", "DWCP_NKEY_FILE", "DWCP_SECRET", "DWCP_TLS_KEY"].sort(),
    );
  });

  it("leaves out of `dwcp config` the flags two settings share", () => {
    expect(UNIQUE_FLAGS.has("listen")).toBe(false);
    expect(UNIQUE_FLAGS.has("root")).toBe(false);
    expect(UNIQUE_FLAGS.get("replicas")?.env).toBe("DWCP_REPLICAS");
  });
});
