import { describe, expect, it } from "vitest";
import { rolesOf, type Role } from "./provision.js";
import {
  ADMIN_ONLY,
  inboxPrefixOf,
  leafPermissions,
  mayPublish,
  maySubscribe,
  permissionsOf,
  subjectMatches,
} from "./permissions.js";

const roles = rolesOf({ hosts: ["a", "b"] });
const of = (r: Role) => permissionsOf(r, roles);

describe("subjectMatches", () => {
  it("follows NATS wildcards", () => {
    expect(subjectMatches("dwcp.work.a", "dwcp.work.a")).toBe(true);
    expect(subjectMatches("dwcp.*.a", "dwcp.work.a")).toBe(true);
    expect(subjectMatches("dwcp.>", "dwcp.work.a")).toBe(true);
    expect(subjectMatches("dwcp.work.>", "dwcp.work")).toBe(false);
    expect(subjectMatches("dwcp.work", "dwcp.work.a")).toBe(false);
    // A partial token is no wildcard.
    expect(subjectMatches("$JS.API.STREAM.INFO.DWCP_WORK_*", "$JS.API.STREAM.INFO.DWCP_WORK_a")).toBe(false);
  });
});

describe("the permission model", () => {
  it("a mover pulls and acks only its host's work durable and writes only its registry key", () => {
    const m = of("mover-a");
    expect(mayPublish(m, "$JS.API.CONSUMER.MSG.NEXT.DWCP_WORK_a.mover")).toBe(true);
    expect(mayPublish(m, "$JS.ACK.DWCP_WORK_a.mover.1.5.5.1700000000.0")).toBe(true);
    expect(mayPublish(m, "$JS.API.CONSUMER.MSG.NEXT.DWCP_WORK_b.mover")).toBe(false);
    expect(mayPublish(m, "$JS.ACK.DWCP_WORK_b.mover.1.5.5.1700000000.0")).toBe(false);
    expect(mayPublish(m, "$KV.dwcp_movers.a")).toBe(true);
    expect(mayPublish(m, "$KV.dwcp_movers.b")).toBe(false);
    expect(maySubscribe(m, "dwcp.mover.a.rpc")).toBe(true);
    expect(maySubscribe(m, "dwcp.mover.b.rpc")).toBe(false);
    expect(mayPublish(m, "dwcp.evt.migration.m1")).toBe(true);
    expect(mayPublish(m, "dwcp.evt.replication.v")).toBe(false);
    expect(mayPublish(m, "dwcp.work.a")).toBe(false);
    expect(mayPublish(m, "dwcp.mover.b.rpc")).toBe(false);
  });

  it("a mover answers on reply subjects that name its host, never by allow_responses", () => {
    const m = of("mover-a");
    // The coordinator's RPCs and mover-b's live requests to host a.
    expect(mayPublish(m, "_INBOX_coordinator.rpc.a.tok")).toBe(true);
    expect(mayPublish(m, "_INBOX_mover-b.rpc.a.tok")).toBe(true);
    // Answers for host b, the coordinator's other inboxes (its PubAcks), roles that ask a nothing.
    expect(mayPublish(m, "_INBOX_coordinator.rpc.b.tok")).toBe(false);
    expect(mayPublish(m, "_INBOX_coordinator.nuid.tok")).toBe(false);
    expect(mayPublish(m, "_INBOX_mover-a.rpc.a.tok")).toBe(false);
    expect(mayPublish(m, "_INBOX_cli.rpc.a.tok")).toBe(false);
    expect(mayPublish(m, "_INBOX_admin.rpc.a.tok")).toBe(false);
  });

  it("a replication service answers the cli and admin on reply subjects that name its host", () => {
    const p = of("replication-a");
    expect(mayPublish(p, "_INBOX_cli.rpc.a.tok")).toBe(true);
    expect(mayPublish(p, "_INBOX_admin.rpc.a.tok")).toBe(true);
    expect(mayPublish(p, "_INBOX_cli.rpc.b.tok")).toBe(false);
    expect(mayPublish(p, "_INBOX_cli.nuid.tok")).toBe(false);
    expect(mayPublish(p, "_INBOX_coordinator.rpc.a.tok")).toBe(false);
  });

  it("only movers ask another mover about a live migration; each serves only its own host's", () => {
    for (const r of roles) {
      const p = of(r);
      const expected = r.startsWith("mover-") || r === "admin";
      expect(mayPublish(p, "dwcp.mover.b.live"), r).toBe(expected);
      expect(maySubscribe(p, "dwcp.mover.b.live"), r).toBe(r === "mover-b" || r === "admin");
    }
    // The live subject grants nothing on the coordinator's RPC subject.
    expect(mayPublish(of("mover-a"), "dwcp.mover.b.rpc")).toBe(false);
  });

  it("only the coordinator hands out work and calls mover RPCs", () => {
    for (const r of roles) {
      const p = of(r);
      const expected = r === "coordinator" || r === "admin";
      expect(mayPublish(p, "dwcp.work.a"), r).toBe(expected);
      expect(mayPublish(p, "dwcp.mover.a.rpc"), r).toBe(expected);
    }
    const c = of("coordinator");
    expect(mayPublish(c, "$JS.API.CONSUMER.MSG.NEXT.DWCP_CMD.coordinator")).toBe(true);
    expect(mayPublish(c, "$JS.API.STREAM.MSG.DELETE.DWCP_WORK_b")).toBe(true);
    expect(mayPublish(c, "$JS.API.STREAM.MSG.DELETE.DWCP_EVT")).toBe(false);
    expect(maySubscribe(c, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.DWCP_WORK_a.mover")).toBe(true);
  });

  it("only the coordinator publishes migration summaries; only it, the cli and the observer read them", () => {
    for (const r of roles) {
      const p = of(r);
      expect(mayPublish(p, "dwcp.summary.page.0"), r).toBe(r === "coordinator" || r === "admin");
      const reads = r === "coordinator" || r === "cli" || r === "observer" || r === "admin";
      expect(mayPublish(p, "$JS.API.CONSUMER.CREATE.DWCP_SUMMARY.oc_1.dwcp.summary.page.>"), r).toBe(reads);
      expect(mayPublish(p, "$JS.API.CONSUMER.MSG.NEXT.DWCP_SUMMARY.oc_1"), r).toBe(reads);
    }
  });

  it("the cli publishes commands and reads events; the observer only reads", () => {
    const cli = of("cli");
    const obs = of("observer");
    for (const s of ["dwcp.cmd.migration.start", "dwcp.cmd.migration.cancel", "dwcp.replication.a.rpc"]) {
      expect(mayPublish(cli, s)).toBe(true);
      expect(mayPublish(obs, s)).toBe(false);
    }
    // Ordered consumers as the v3 client creates them on 2.9 and 2.12, direct gets.
    for (const p of [cli, obs]) {
      expect(mayPublish(p, "$JS.API.CONSUMER.CREATE.DWCP_EVT.oc_1.dwcp.evt.migration.m1")).toBe(true);
      expect(mayPublish(p, "$JS.API.CONSUMER.MSG.NEXT.DWCP_EVT.oc_1")).toBe(true);
      expect(mayPublish(p, "$JS.API.DIRECT.GET.DWCP_EVT")).toBe(true);
      expect(mayPublish(p, "$JS.API.CONSUMER.CREATE.DWCP_CMD.x")).toBe(false);
      expect(mayPublish(p, "dwcp.evt.migration.m1")).toBe(false);
    }
  });

  it("only the cli reads the coordinator's and the movers' consumer info (dwcp top's lag)", () => {
    const lag = ["$JS.API.CONSUMER.INFO.DWCP_CMD.coordinator", "$JS.API.CONSUMER.INFO.DWCP_WORK_b.mover"];
    for (const s of lag) {
      expect(mayPublish(of("cli"), s), s).toBe(true);
      for (const r of ["observer", "mover-a", "replication-a"] as const)
        expect(mayPublish(of(r), s), `${r} ${s}`).toBe(false);
    }
    // Info only: the cli neither pulls nor acks, and reads no other durable of the command stream.
    expect(mayPublish(of("cli"), "$JS.API.CONSUMER.MSG.NEXT.DWCP_WORK_b.mover")).toBe(false);
    expect(mayPublish(of("cli"), "$JS.ACK.DWCP_WORK_b.mover.1.5.5.1700000000.0")).toBe(false);
    expect(mayPublish(of("cli"), "$JS.API.CONSUMER.INFO.DWCP_CMD.other")).toBe(false);
  });

  it("a replication service answers only its host's subject and appends only replication events", () => {
    const r = of("replication-a");
    expect(maySubscribe(r, "dwcp.replication.a.rpc")).toBe(true);
    expect(maySubscribe(r, "dwcp.replication.b.rpc")).toBe(false);
    expect(mayPublish(r, "dwcp.evt.replication.vm1")).toBe(true);
    expect(mayPublish(r, "dwcp.evt.migration.m1")).toBe(false);
  });

  it("nobody but admin changes or deletes streams and consumers, or publishes advisories", () => {
    const admin = of("admin");
    for (const s of [
      "$JS.API.STREAM.DELETE.DWCP_WORK_b",
      "$JS.API.STREAM.PURGE.DWCP_EVT",
      "$JS.API.STREAM.UPDATE.DWCP_EVT",
      "$JS.API.STREAM.CREATE.EVIL",
      "$JS.API.CONSUMER.DELETE.DWCP_CMD.coordinator",
      "$JS.API.CONSUMER.DURABLE.CREATE.DWCP_CMD.x",
      "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.DWCP_WORK_a.mover",
    ]) {
      expect(mayPublish(admin, s), s).toBe(true);
      for (const r of roles.filter((r) => r !== "admin")) expect(mayPublish(of(r), s), `${r} ${s}`).toBe(false);
    }
    for (const r of roles.filter((r) => r !== "admin")) expect(of(r).publish.deny).toEqual(ADMIN_ONLY);
  });

  it("each role subscribes only to its own inbox; admin to none of the others'", () => {
    for (const r of roles) {
      for (const other of roles) {
        const inbox = `${inboxPrefixOf(other)}.abc.1`;
        expect(maySubscribe(of(r), inbox), `${r} on ${other}'s inbox`).toBe(r === other);
      }
    }
    expect(inboxPrefixOf("mover-a")).toBe("_INBOX_mover-a");
  });
});

describe("a site's leafnode link", () => {
  const hosts = { east: ["e1"], west: ["w1"] };
  const west = leafPermissions("west", hosts, ["coordinator", "mover-w1"]);

  it("receives its own hosts' mover RPCs and no other site's", () => {
    expect(maySubscribe(west, "dwcp.mover.w1.rpc")).toBe(true);
    expect(maySubscribe(west, "dwcp.mover.e1.rpc")).toBe(false);
    expect(maySubscribe(west, "dwcp.mover.x9.rpc")).toBe(false);
  });

  it("sends mover RPCs only to the other sites' hosts, and replies only to the roles that ask across", () => {
    expect(mayPublish(west, "dwcp.mover.e1.rpc")).toBe(true);
    expect(mayPublish(west, "dwcp.mover.w1.rpc")).toBe(false);
    expect(mayPublish(west, `${inboxPrefixOf("coordinator")}.x.y`)).toBe(true);
    expect(mayPublish(west, `${inboxPrefixOf("cli")}.x.y`)).toBe(false);
  });
});
