import { describe, expect, it } from "vitest";
import { dwcpStreamOf } from "./backup-content.js";

describe("dwcp's own streams", () => {
  it("are the event log, the command stream and per-host work queues; nothing else", () => {
    expect(dwcpStreamOf("DWCP_EVT")).toEqual({ kind: "evt" });
    expect(dwcpStreamOf("DWCP_CMD")).toEqual({ kind: "cmd" });
    expect(dwcpStreamOf("DWCP_WORK_b")).toEqual({ kind: "work", host: "b" });
    for (const name of ["EVIL_RPC", "DWCP_WORK_", "DWCP_WORK_a.b", "DWCP_WORK_*", "KV_dwcp_movers", "dwcp_evt"])
      expect(dwcpStreamOf(name), name).toBeUndefined();
  });
});
