import { mkdtempSync, readFileSync, rmSync } from "node:fs";
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

  it("takes each peer's leafnode link as the user of its site certificate, with that link's permissions", async () => {
    const d = join(dir, "leaf");
    const site = await printConfig({
      dataDir: d,
      hosts: ["a", "w1"],
      federation: { site: "east", peers: ["west"] },
      siteHosts: { east: ["a"], west: ["w1"] },
    });
    const leaf = site.split("# the leafnode link of site west")[1]?.split("\n    }")[0] ?? "";
    expect(leaf).toContain('user: "CN=site-west"');
    expect(leaf).toContain('allowed_connection_types: ["LEAFNODE"]');
    // West's link may carry calls to east's movers' RPCs into east, not calls to west's own movers.
    expect(leaf).toContain("dwcp.mover.a.rpc");
    expect(leaf).not.toContain("dwcp.mover.w1.rpc");
    expect(site).not.toContain("the leafnode link of site east");
    // Both sites' identities are provisioned, each its site's principal in trust.json.
    const trust = JSON.parse(readFileSync(join(d, "trust.json"), "utf8")) as {
      principals: Record<string, { role: string; site?: string }>;
    };
    const sites = Object.values(trust.principals).filter((p) => p.site !== undefined);
    expect(sites.map((p) => `${p.role}@${p.site}`).sort()).toEqual(["site-east@east", "site-west@west"]);
  });
});
