import { describe, expect, it } from "vitest";
import { fold } from "../domain/federation/evolve.js";
import { logOf, t } from "#test/federation/fixtures.js";
import { buildReport, renderStatus } from "./status.js";

describe("federation status", () => {
  const a = logOf("a");
  const b = logOf("b");
  const view = fold([
    a.joined(t(0)),
    a.health(t(10)),
    a.placed(t(11), "vm1", "h1"),
    b.joined(t(0)),
    b.health(t(2), "degraded"),
    b.moved(t(12), "vm1", "a", "b"),
  ]);
  const report = buildReport("a", view, new Map([["b", { lagEvents: 2, lastContactMs: 1_500 }]]), new Date(t(12)));

  it("reports every site with its staleness and link, and every VM where it runs", () => {
    expect(report.sites.map((s) => [s.site, s.health, s.ageMs, s.stale, s.events])).toEqual([
      ["a", "healthy", 1_000, false, 3],
      ["b", "degraded", 0, false, 3],
    ]);
    expect(report.sites[1]?.link).toEqual({ lagEvents: 2, lastContactMs: 1_500 });
    expect(report.vms).toEqual([{ vm: "vm1", site: "b", since: t(12), by: "b" }]);
  });

  it("renders aligned tables that name the answering site and flag stale ones", () => {
    const stale = buildReport("a", view, new Map(), new Date(t(30)));
    const text = renderStatus(stale);
    expect(text).toContain("as seen from site a");
    expect(text).toMatch(/a \(this\)\s+joined\s+healthy/);
    expect(text).toContain("STALE");
    expect(text).toMatch(/vm1\s+b/);
  });
});
