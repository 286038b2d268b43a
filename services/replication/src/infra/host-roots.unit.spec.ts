import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { hostRoots } from "./host-roots.js";

describe("hostRoots", () => {
  it("without --roots puts every host under the data dir (one machine, dwcp up)", () => {
    const r = hostRoots(undefined, "/d");
    expect(r("b")).toBe(resolve("/d/hosts/b"));
    expect(r.explicit).toBe(false);
    expect(r.configured("b")).toBe(false);
  });

  it("with --roots says so, and which hosts it names", () => {
    const r = hostRoots("a=/srv/a,agent=/srv/replicas", "/d");
    expect(r.explicit).toBe(true);
    expect(r("a")).toBe("/srv/a");
    expect(r.configured("agent")).toBe(true);
    expect(r.configured("b")).toBe(false);
  });
});
