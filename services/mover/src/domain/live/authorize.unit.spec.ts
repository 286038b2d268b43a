import { describe, expect, it } from "vitest";
import { StartMigration, VmDefinition, type LiveRequest, type MigrationRequested } from "#schemas/index.js";
import { liveRequestProblem } from "./authorize.js";

const c = StartMigration.parse({
  type: "StartMigration",
  version: 1,
  commandId: "m1",
  vm: "guest1",
  mode: "live",
  source: { host: "a", volumes: [] },
  destination: { host: "b", dir: "vms/guest1" },
});
const requested: MigrationRequested = {
  ...c,
  type: "MigrationRequested",
  migrationId: "m1",
  at: "2026-01-01T00:00:00Z",
};
const definition = VmDefinition.parse({
  version: 1,
  name: "guest1",
  root: "/srv/a",
  memoryMiB: 64,
  disks: [{ id: "disk0", path: "guest1/disk0.img" }],
});
const prepare: LiveRequest = {
  op: "livePrepare",
  version: 1,
  migrationId: "m1",
  sourceHost: "a",
  destDir: "vms/guest1",
  definition,
  diskSizes: [{ id: "disk0", sizeBytes: 1 << 20 }],
};

describe("liveRequestProblem", () => {
  it("lets the source host's request for a live migration to this host through", () => {
    expect(liveRequestProblem(requested, prepare, "b")).toBeUndefined();
    expect(
      liveRequestProblem(requested, { op: "liveAbort", version: 1, migrationId: "m1", sourceHost: "a" }, "b"),
    ).toBe(undefined);
  });

  it("refuses another destination, another source, another directory or VM, and a file migration", () => {
    expect(liveRequestProblem(requested, prepare, "c")).toMatch(/goes to host b, not to this host \(c\)/);
    expect(liveRequestProblem(requested, { ...prepare, sourceHost: "c" }, "b")).toMatch(/comes from host a/);
    expect(liveRequestProblem(requested, { ...prepare, destDir: "/etc" }, "b")).toMatch(/not \/etc/);
    expect(liveRequestProblem(requested, { ...prepare, definition: { ...definition, name: "x" } }, "b")).toMatch(
      /not x/,
    );
    expect(liveRequestProblem({ ...requested, mode: undefined }, prepare, "b")).toMatch(/not a live migration/);
    expect(liveRequestProblem(undefined, prepare, "b")).toMatch(/no migration m1/);
  });
});
