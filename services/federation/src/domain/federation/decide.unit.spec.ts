import { describe, expect, it } from "vitest";
import type { FederationEvent } from "#schemas/federation.js";
import { decide, type FederationCommand } from "./decide.js";
import {
  NotVmOwnerError,
  SiteNotJoinedError,
  UnknownSiteError,
  UnknownVmError,
  VmPlacedElsewhereError,
} from "./errors.js";
import { fold } from "./evolve.js";
import { capacity, logOf, t } from "#test/federation/fixtures.js";

const now = new Date(t(30));

/** given(events).when(command, by site).then(events) */
function given(...history: FederationEvent[]) {
  const view = fold(history);
  return {
    when: (command: FederationCommand, site = "a") => ({
      then: (expected: Array<Partial<FederationEvent>>) =>
        expect(decide(view, command, { now, site })).toEqual(expected.map((e): unknown => expect.objectContaining(e))),
      throws: (cls: new (...a: never[]) => Error) => expect(() => decide(view, command, { now, site })).toThrow(cls),
    }),
  };
}

const join: FederationCommand = {
  type: "JoinSite",
  health: "healthy",
  capacity: capacity(),
  reportIntervalMs: 5_000,
  endpoint: "nats://127.0.0.1:1",
};
const health: FederationCommand = {
  type: "ReportHealth",
  health: "degraded",
  capacity: capacity(1),
  reportIntervalMs: 5_000,
};

describe("decide: membership", () => {
  it("a new site joins with seq 1, stamped with the context's time and site", () => {
    given()
      .when(join)
      .then([
        {
          type: "SiteJoined",
          site: "a",
          seq: 1,
          at: now.toISOString(),
          reportIntervalMs: 5_000,
          endpoint: "nats://127.0.0.1:1",
        },
      ]);
  });

  it("joining again while joined changes nothing", () => {
    const a = logOf("a");
    given(a.joined(t(1)))
      .when(join)
      .then([]);
  });

  it("a site that left may join again, numbered after its last event", () => {
    const a = logOf("a");
    given(a.joined(t(1)), a.left(t(2)))
      .when(join)
      .then([{ type: "SiteJoined", seq: 3 }]);
  });

  it("health reports need a joined site", () => {
    given().when(health).throws(SiteNotJoinedError);
    const a = logOf("a");
    given(a.joined(t(1)))
      .when(health)
      .then([{ type: "SiteHealthReported", seq: 2, health: "degraded", capacity: capacity(1) }]);
  });

  it("leaving is recorded once", () => {
    const a = logOf("a");
    given(a.joined(t(1)))
      .when({ type: "LeaveSite", reason: "decommissioned" })
      .then([{ type: "SiteLeft", seq: 2, reason: "decommissioned" }]);
    given().when({ type: "LeaveSite", reason: "x" }).then([]);
  });

  it("numbers events after the site's own log, not after other sites' events", () => {
    const a = logOf("a");
    const b = logOf("b");
    given(a.joined(t(1)), b.joined(t(1)), b.health(t(2)), b.health(t(3)))
      .when(health)
      .then([{ site: "a", seq: 2 }]);
  });
});

describe("decide: placements", () => {
  const a = logOf("a");
  const b = logOf("b");
  const history = [a.joined(t(1)), b.joined(t(1)), a.placed(t(2), "vm1", "h1")];

  it("places a VM at the deciding site", () => {
    given(...history)
      .when({ type: "PlaceVm", vm: "vm2", host: "h2" })
      .then([{ type: "VmPlaced", site: "a", vm: "vm2", host: "h2", seq: 3 }]);
  });

  it("placing the same VM the same way again changes nothing; a new host is a new placement", () => {
    given(...history)
      .when({ type: "PlaceVm", vm: "vm1", host: "h1" })
      .then([]);
    given(...history)
      .when({ type: "PlaceVm", vm: "vm1", host: "h9" })
      .then([{ type: "VmPlaced", host: "h9" }]);
  });

  it("refuses to place a VM that runs at another site", () => {
    given(...history)
      .when({ type: "PlaceVm", vm: "vm1" }, "b")
      .throws(VmPlacedElsewhereError);
  });

  it("refuses placements from a site that has not joined", () => {
    given(...history)
      .when({ type: "PlaceVm", vm: "vm3" }, "c")
      .throws(SiteNotJoinedError);
  });

  it("moves a VM from its site to a joined site (the coordinator's hook), repeating spec and labels", () => {
    given(...history)
      .when({ type: "MoveVm", vm: "vm1", to: "b", migrationId: "m1" })
      .then([{ type: "VmMoved", from: "a", to: "b", migrationId: "m1", seq: 3 }]);
    given(...history)
      .when({ type: "MoveVm", vm: "vm1", to: "b" }, "b")
      .then([{ type: "VmMoved", site: "b", from: "a", to: "b", seq: 2 }]);
  });

  it("a move carries the VM's spec and labels so the moved record needs no earlier event", () => {
    const spec = { vcpus: 2, memoryBytes: 2 ** 31, diskBytes: 2 ** 34 };
    const placed: FederationEvent = {
      type: "VmPlaced",
      version: 1,
      site: "a",
      seq: 3,
      at: t(3),
      vm: "vm9",
      spec,
      labels: { tier: "web" },
    };
    given(...history, placed)
      .when({ type: "MoveVm", vm: "vm9", to: "b" })
      .then([{ type: "VmMoved", spec, labels: { tier: "web" }, seq: 4 }]);
  });

  it("moving to where the VM already runs changes nothing", () => {
    given(...history)
      .when({ type: "MoveVm", vm: "vm1", to: "a" })
      .then([]);
  });

  it("rejects moves of unknown VMs, to unknown sites, or by uninvolved sites", () => {
    const c = logOf("c");
    given(...history)
      .when({ type: "MoveVm", vm: "nope", to: "b" })
      .throws(UnknownVmError);
    given(...history)
      .when({ type: "MoveVm", vm: "vm1", to: "zz" })
      .throws(UnknownSiteError);
    given(...history, c.joined(t(1)))
      .when({ type: "MoveVm", vm: "vm1", to: "b" }, "c")
      .throws(NotVmOwnerError);
  });

  it("only the site a VM runs at removes it; removing an absent VM changes nothing", () => {
    given(...history)
      .when({ type: "RemoveVm", vm: "vm1" })
      .then([{ type: "VmRemoved", vm: "vm1", seq: 3 }]);
    given(...history)
      .when({ type: "RemoveVm", vm: "vm1" }, "b")
      .throws(NotVmOwnerError);
    given(...history)
      .when({ type: "RemoveVm", vm: "ghost" })
      .then([]);
  });
});

describe("decide: recording a completed cross-site migration", () => {
  const a = logOf("a");
  const b = logOf("b");
  const c = logOf("c");
  const history = [a.joined(t(1)), b.joined(t(1)), c.joined(t(1)), a.placed(t(2), "vm1", "h1")];
  const record = (vm: string, completedAt: string, to = "b"): FederationCommand => ({
    type: "RecordVmMigration",
    version: 1,
    vm,
    migrationId: "m1",
    to,
    host: "b1",
    completedAt,
  });

  it("moves the VM from the source site to the destination site, claimed at the completion time", () => {
    given(...history)
      .when(record("vm1", t(5)))
      .then([{ type: "VmMoved", site: "a", seq: 3, from: "a", to: "b", host: "b1", migrationId: "m1", at: t(5) }]);
  });

  it("a VM the view does not place moves from the recording site", () => {
    given(...history)
      .when(record("vm7", t(5)))
      .then([{ type: "VmMoved", from: "a", to: "b", vm: "vm7", at: t(5) }]);
    given(...history, a.removed(t(3), "vm1"))
      .when(record("vm1", t(5)))
      .then([{ type: "VmMoved", from: "a", to: "b", vm: "vm1" }]);
  });

  it("replayed, it finds its own claim and changes nothing", () => {
    const view = fold(history);
    const events = decide(view, record("vm1", t(5)), { now, site: "a" });
    given(...history, ...events)
      .when(record("vm1", t(5)))
      .then([]);
  });

  it("a change made after the migration completed wins: nothing is recorded", () => {
    given(...history, a.moved(t(9), "vm1", "a", "c"))
      .when(record("vm1", t(5)))
      .then([]);
  });

  it("refuses when the view says the VM runs at a third site, or the destination has not joined", () => {
    given(...history, c.placed(t(3), "vm3"))
      .when(record("vm3", t(5)))
      .throws(NotVmOwnerError);
    given(...history)
      .when(record("vm1", t(5), "zz"))
      .throws(UnknownSiteError);
  });

  it("a migration to the recording site itself is not a cross-site move", () => {
    given(...history)
      .when(record("vm1", t(5), "a"))
      .then([]);
  });
});
