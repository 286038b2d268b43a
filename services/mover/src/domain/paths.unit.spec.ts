import { describe, expect, it } from "vitest";
import { basenameProblem, duplicates, isInsideRoot, lexicalConfine, partName } from "./paths.js";

const roots = ["/srv/vms", "/data"];

describe("lexicalConfine", () => {
  it("resolves relative paths against the first root", () => {
    expect(lexicalConfine(roots, "a/b.img")).toEqual({ ok: true, path: "/srv/vms/a/b.img", root: "/srv/vms" });
    expect(lexicalConfine(roots, "./a//b/")).toEqual({ ok: true, path: "/srv/vms/a/b", root: "/srv/vms" });
  });

  it("accepts absolute paths inside any root, and the roots themselves", () => {
    expect(lexicalConfine(roots, "/data/x")).toMatchObject({ ok: true, root: "/data" });
    expect(lexicalConfine(roots, "/srv/vms")).toMatchObject({ ok: true, path: "/srv/vms" });
  });

  it.each([
    ["../etc/passwd", /'\.\.'/],
    ["a/../../etc", /'\.\.'/],
    ["a/../b", /'\.\.'/],
    ["/srv/vms/../vms/x", /'\.\.'/],
    ["/etc/shadow", /outside every root/],
    ["/srv/vmsX/a", /outside every root/],
    ["/srv", /outside every root/],
    ["", /empty/],
    ["a\0b", /NUL/],
  ])("refuses %j", (p, reason) => {
    const r = lexicalConfine(roots, p);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  it("refuses everything without roots", () => {
    expect(lexicalConfine([], "/data/x").ok).toBe(false);
  });

  it("treats / as a root containing everything", () => {
    expect(isInsideRoot("/", "/etc")).toBe(true);
    expect(isInsideRoot("/data", "/database")).toBe(false);
  });
});

describe("destination names", () => {
  it.each([["disk.img"], ["a..b"], [".hidden"]])("accepts %j", (name) => {
    expect(basenameProblem(name)).toBeUndefined();
  });

  it.each([[""], ["."], [".."], ["a/b"], ["/x"], ["x\0"], ["é".repeat(128)]])("refuses %j", (name) => {
    expect(basenameProblem(name)).toBeDefined();
  });

  it("names the part file and finds duplicates", () => {
    expect(partName("disk.img")).toBe("disk.img.part");
    expect(duplicates(["a", "b", "a", "c", "b", "a"])).toEqual(["a", "b"]);
  });
});
