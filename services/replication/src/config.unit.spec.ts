import { describe, expect, it } from "vitest";
import { agentConfig } from "./config.js";
import { problemsOf } from "../../../test/support/config-problems.js";

describe("replication agent config", () => {
  it("replication agent", () => {
    expect(problemsOf(() => agentConfig({ root: "/x" }, { DWCP_SECRET: "x", UV_THREADPOOL_SIZE: "lots" }))).toEqual([
      expect.stringMatching(/^secret: DWCP_SECRET must be set/),
      "threadPoolSize: must be a whole number of threads",
      expect.stringMatching(/^tls: the data link needs DWCP_TLS_CA, DWCP_TLS_CERT and DWCP_TLS_KEY/),
    ]);
    const plaintext = { DWCP_SECRET: "0123456789abcdef", DWCP_DATA_PLAINTEXT: "on" };
    const c = agentConfig({ root: "/x", listen: "[::1]:7000" }, plaintext);
    expect(c).toMatchObject({ listenHost: "::1", listenPort: 7000, threadPoolSize: 16, link: { mode: "plaintext" } });
  });
});
