import { describe, expect, it } from "vitest";
import { apply, fold } from "./evolve.js";
import { healthOf } from "./health.js";
import { logOf, t } from "#test/federation/fixtures.js";
import { canonicalJson, DEFAULT_STALE_AFTER_MS, overlayView, peersRead, placements, staleness } from "./state.js";

describe("staleness", () => {
  const a = logOf("a");
  const b = logOf("b");
  const c = logOf("c");
  const view = fold([a.joined(t(0), 1_000), a.health(t(10)), b.joined(t(0), 1_000), b.health(t(5)), c.joined(t(0), 0)]);

  it("given health every second, a site silent for up to three seconds is fresh and beyond that stale", () => {
    const rows = staleness(view, new Date(t(13)));
    expect(rows.map((r) => [r.site, r.ageMs, r.stale])).toEqual([
      ["a", 3_000, false],
      ["b", 8_000, true],
      ["c", 13_000, false],
    ]);
  });

  it("a site that promised no reports is stale after the default", () => {
    const at = new Date(Date.parse(t(0)) + DEFAULT_STALE_AFTER_MS + 1);
    expect(staleness(view, at).find((r) => r.site === "c")).toMatchObject({
      stale: true,
      staleAfterMs: DEFAULT_STALE_AFTER_MS,
    });
  });

  it("a site that left is never stale", () => {
    const left = fold([b.left(t(6))], view);
    expect(staleness(left, new Date(t(59))).find((r) => r.site === "b")).toMatchObject({
      status: "left",
      stale: false,
    });
  });
});

describe("views", () => {
  it("placements lists running VMs by id, without tombstones", () => {
    const a = logOf("a");
    const view = fold([
      a.joined(t(0)),
      a.placed(t(1), "vm2"),
      a.placed(t(1), "vm1"),
      a.placed(t(1), "vm3"),
      a.removed(t(2), "vm3"),
    ]);
    expect(placements(view).map((p) => p.vm)).toEqual(["vm1", "vm2"]);
  });

  it("canonical JSON ignores key order", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } })).toBe(
      canonicalJson({ a: { c: null, d: [1, { x: 1, y: 2 }] }, b: 1 }),
    );
  });
});

describe("health and overlays", () => {
  const cap = (memFree: number, diskFree: number) => ({
    vcpus: { total: 8, free: 8 },
    memoryBytes: { total: 100, free: memFree },
    diskBytes: { total: 100, free: diskFree },
  });

  it("a site is healthy with room, degraded under 10% free memory or disk, unhealthy at none", () => {
    expect(healthOf(cap(50, 50))).toBe("healthy");
    expect(healthOf(cap(9, 50))).toBe("degraded");
    expect(healthOf(cap(50, 0))).toBe("unhealthy");
  });

  it("an overlay sees its base and keeps its own writes to itself", () => {
    const a = logOf("a");
    const base = fold([a.joined(t(1)), a.placed(t(2), "vm1")]);
    const layer = overlayView(base);
    apply(layer, a.placed(t(3), "vm2"));
    expect(layer.vms["vm1"]?.site).toBe("a");
    expect(layer.vms["vm2"]?.site).toBe("a");
    expect(layer.sites["a"]?.lastSeq).toBe(3);
    expect(base.vms["vm2"]).toBeUndefined();
    expect(base.sites["a"]?.lastSeq).toBe(2);
  });
});

describe("encodings peers read", () => {
  it("holds only once every peer's latest join or health report names the encoding", () => {
    const [a, b] = [logOf("a"), logOf("b")];
    const joined = fold([a.joined(t(0), 1_000, ["gzip"]), b.joined(t(0))]);
    expect(peersRead(joined, ["a"], "gzip")).toBe(true);
    expect(peersRead(joined, ["a", "b"], "gzip")).toBe(false); // b's join names none
    expect(peersRead(joined, ["a", "c"], "gzip")).toBe(false); // c is not in the view yet
    const upgraded = fold([b.health(t(1), "healthy", 4, ["zstd", "gzip"])], joined);
    expect(peersRead(upgraded, ["a", "b"], "gzip")).toBe(true);
    // A report from a build that names no encodings takes it back.
    const downgraded = fold([b.health(t(2))], upgraded);
    expect(peersRead(downgraded, ["a", "b"], "gzip")).toBe(false);
    expect(peersRead(downgraded, [], "gzip")).toBe(true);
  });
});
