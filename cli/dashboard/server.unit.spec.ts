import { describe, expect, it } from "vitest";
import { ConfigError } from "#common/errors.js";
import { dashboardSettings } from "./server.js";

const problems = (f: () => unknown): string[] => {
  try {
    f();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
};

describe("dashboard listener settings", () => {
  it("take a loopback address without a token", () => {
    expect(dashboardSettings({ listen: "127.0.0.1:8089" })).toEqual({
      host: "127.0.0.1",
      port: 8089,
      token: undefined,
    });
    expect(dashboardSettings({ listen: "[::1]:0" })).toEqual({ host: "::1", port: 0, token: undefined });
  });

  it("refuse another address without a token file, saying what to do", () => {
    expect(problems(() => dashboardSettings({ listen: "0.0.0.0:8089" }))).toEqual([
      expect.stringMatching(/not a loopback address: give --token-file FILE/),
    ]);
    // dwcp up takes no token file: it says where to go instead.
    expect(problems(() => dashboardSettings({ listen: "10.0.0.5:8089", flag: "--dashboard-listen" }))).toEqual([
      expect.stringMatching(/dwcp up serves its dashboard on loopback only; .*dwcp dashboard --listen/),
    ]);
  });

  it("refuse a malformed address", () => {
    expect(problems(() => dashboardSettings({ listen: "localhost" }))).toEqual([
      '--listen must be HOST:PORT, got "localhost"',
    ]);
    expect(problems(() => dashboardSettings({ listen: "127.0.0.1:70000" }))).toHaveLength(1);
  });
});
