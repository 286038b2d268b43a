import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { printConfig } from "./up.js";

// `dwcp init --print-config --site S --peers P`: the configuration of one deployed site of a
// federation (ops/ansible writes one per site).

const dir = mkdtempSync(join(tmpdir(), "dwcp-print-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The `# <role>` permission set that printConfig lists after the server config. */
const setOf = (config: string, role: string): string => config.split(`\n# ${role}\n`)[1]?.split("\n# ")[0] ?? "";

describe("init --print-config", () => {
  it("gives a federated site's coordinator and movers the peers' mover registries, and nothing more", async () => {
    const alone = await printConfig({ dataDir: dir, hosts: ["a"] });
    const site = await printConfig({ dataDir: dir, hosts: ["a"], federation: { site: "east", peers: ["west"] } });
    for (const role of ["coordinator", "mover-a"]) {
      expect(setOf(site, role)).toContain("$JS.west.API.DIRECT.GET.KV_dwcp_movers");
      expect(setOf(alone, role)).not.toContain("$JS.west.API");
    }
    // The cli reads the site's own federation log and its mirror of the peer's, not the peer's domain.
    expect(setOf(site, "cli")).toContain("FEDM_west");
    expect(setOf(site, "cli")).not.toContain("$JS.west.API");
    expect(setOf(site, "replication-a")).not.toContain("west");
  });
});
