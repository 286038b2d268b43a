import { CMD_STREAM, COORDINATOR_DURABLE, EVT_STREAM, MOVER_DURABLE, MOVERS_BUCKET, workStream } from "../layout.js";
import { roleInboxPrefix as inboxPrefixOf } from "../nats.js";
import { moverHostOf, replicationHostOf, type Role } from "./provision.js";

// What each NATS role may publish and subscribe to: least privilege, found by running every flow
// against a nats-server with these permissions on. Pure: server-config.ts renders it for
// nats-server, the unit spec pins it. Streams, consumers and the registry are created by admin
// before any service starts, so no service role holds a create, update or delete API.

/** One role's NATS permissions, as nats-server's `permissions` block takes them. */
export interface Permissions {
  publish: { allow: string[]; deny: string[] };
  subscribe: { allow: string[]; deny: string[] };
  /**
   * May answer requests it received (to their reply subjects, whoever sent them), up to `max`
   * replies per request within `expiresMs`. Undefined: may not answer.
   */
  allowResponses?: { max: number; expiresMs: number };
}

const API = "$JS.API";
const KV_STREAM = `KV_${MOVERS_BUCKET}`;

/** The client's inbox prefix for a role (the one connectNats gives the role's connections). */
export { inboxPrefixOf };

/** What only admin may do: change or delete streams and consumers, forge advisories. */
export const ADMIN_ONLY: readonly string[] = [
  `${API}.STREAM.CREATE.>`,
  `${API}.STREAM.UPDATE.>`,
  `${API}.STREAM.DELETE.>`,
  `${API}.STREAM.PURGE.>`,
  `${API}.STREAM.RESTORE.>`,
  `${API}.STREAM.SNAPSHOT.>`,
  `${API}.STREAM.PEER.>`,
  `${API}.STREAM.LEADER.>`,
  `${API}.CONSUMER.DELETE.>`,
  `${API}.CONSUMER.DURABLE.>`,
  `${API}.CONSUMER.LEADER.>`,
  `${API}.META.>`,
  `${API}.SERVER.>`,
  `${API}.ACCOUNT.>`,
  "$JS.EVENT.>",
  "$SYS.>",
];

/**
 * Reading a stream as the client does it: info, direct and stored gets, and ephemeral ordered
 * consumers, which the v3 client creates (on 2.9 and 2.12 alike) as
 * `$JS.API.CONSUMER.CREATE.<stream>.<name>[.<filter>]` and pulls with
 * `$JS.API.CONSUMER.MSG.NEXT.<stream>.<name>`. 2.9 cannot restrict a consumer's config by
 * permissions, so a reader could create a durable on this stream: only on streams it may read.
 */
export const readStream = (stream: string): string[] => [
  `${API}.STREAM.INFO.${stream}`,
  `${API}.STREAM.MSG.GET.${stream}`,
  `${API}.DIRECT.GET.${stream}`,
  `${API}.DIRECT.GET.${stream}.>`,
  `${API}.CONSUMER.CREATE.${stream}.>`,
  `${API}.CONSUMER.INFO.${stream}.>`,
  `${API}.CONSUMER.MSG.NEXT.${stream}.>`,
];

/** Pulling and acking from one durable (created by admin) and nothing else on its stream. */
export const pullDurable = (stream: string, durable: string): string[] => [
  `${API}.STREAM.INFO.${stream}`,
  `${API}.CONSUMER.INFO.${stream}.${durable}`,
  `${API}.CONSUMER.MSG.NEXT.${stream}.${durable}`,
  `$JS.ACK.${stream}.${durable}.>`,
];

/** Every role: the JetStream account info the client asks for when it opens JetStream. */
const BASE = [`${API}.INFO`, `${API}.STREAM.NAMES`];
/** Every role reads the events and the mover registry (status, replay, the registry). */
const READ = [...BASE, ...readStream(EVT_STREAM), ...readStream(KV_STREAM), `${API}.STREAM.INFO.${CMD_STREAM}`];

function role(
  name: string,
  publish: string[],
  subscribe: string[],
  allowResponses?: Permissions["allowResponses"],
): Permissions {
  return {
    publish: { allow: [...new Set(publish)], deny: [...ADMIN_ONLY] },
    subscribe: { allow: [`${inboxPrefixOf(name)}.>`, ...new Set(subscribe)], deny: [] },
    ...(allowResponses ? { allowResponses } : {}),
  };
}

/**
 * A mover answers each RPC once; finalize re-reads a whole volume before it answers, so the
 * permission to reply outlives any RPC timeout.
 */
const ONE_REPLY = { max: 1, expiresMs: 3_600_000 };

/** The hosts of a deployment, from its mover roles. */
const hostsOf = (roles: readonly Role[]): string[] =>
  roles.flatMap((r) => {
    const h = moverHostOf(r);
    return h === undefined ? [] : [h];
  });

/**
 * What the coordinator does on each host's work queue: publish items (the subject), and drop an
 * item that used up its deliveries. Stream names in a subject are whole tokens (`DWCP_WORK_*` is
 * no wildcard), so the set is per host.
 */
const dispatchTo = (host: string): string[] => [
  `dwcp.work.${host}`,
  `${API}.STREAM.INFO.${workStream(host)}`,
  `${API}.CONSUMER.INFO.${workStream(host)}.${MOVER_DURABLE}`,
  `${API}.STREAM.MSG.GET.${workStream(host)}`,
  `${API}.STREAM.MSG.DELETE.${workStream(host)}`,
];

/**
 * The permissions of `r` in a deployment of `roles` (the coordinator's work queues are those of
 * its mover roles). Admin, the one role with `>`, is kept out of the other roles' inboxes by name
 * (a deny on `_INBOX_*.>` would deny its own).
 */
export function permissionsOf(r: Role, roles: readonly Role[] = []): Permissions {
  if (r === "admin") {
    return {
      publish: { allow: [">"], deny: [] },
      subscribe: { allow: [">"], deny: roles.filter((o) => o !== "admin").map((o) => `${inboxPrefixOf(o)}.>`) },
    };
  }
  if (r === "coordinator") {
    return role(
      r,
      [
        ...READ,
        ...pullDurable(CMD_STREAM, COORDINATOR_DURABLE),
        // Decisions, and the work queues of the deployment's hosts.
        "dwcp.evt.migration.>",
        ...hostsOf(roles).flatMap(dispatchTo),
        "dwcp.mover.*.rpc",
      ],
      ["dwcp.evt.>", `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.${MOVER_DURABLE}`],
    );
  }
  if (r === "cli") {
    return role(r, [...READ, "dwcp.cmd.migration.start", "dwcp.cmd.migration.cancel", "dwcp.replication.*.rpc"], []);
  }
  if (r === "observer") return role(r, READ, []);
  const mover = moverHostOf(r);
  if (mover !== undefined) {
    return role(
      r,
      [
        ...READ,
        ...pullDurable(workStream(mover), MOVER_DURABLE),
        `$KV.${MOVERS_BUCKET}.${mover}`,
        // Transfer facts (ChunkBatchTransferred, ...): their producer is checked by signature.
        "dwcp.evt.migration.>",
      ],
      [`dwcp.mover.${mover}.rpc`, "dwcp.evt.migration.>"],
      ONE_REPLY,
    );
  }
  const replication = replicationHostOf(r);
  if (replication !== undefined) {
    // A replicate command is answered with heartbeats for as long as the sync runs.
    return role(r, [...READ, "dwcp.evt.replication.>"], [`dwcp.replication.${replication}.rpc`], {
      max: 1_000_000,
      expiresMs: 24 * 3_600_000,
    });
  }
  const site = /^site-(.+)$/.exec(r)?.[1];
  if (site !== undefined) return sitePermissions();
  return role(r, BASE, []);
}

/**
 * A leafnode's user at the hub: federation's own subjects and the JetStream API of other
 * domains, nothing of the local dwcp subjects (those never cross a leafnode).
 */
function sitePermissions(): Permissions {
  const subjects = ["dwcp.fed.>", "$JS.*.API.>", "$JS.ACK.>", "_INBOX.>", "_INBOX_*.>"];
  return {
    publish: { allow: subjects, deny: ["$JS.EVENT.>"] },
    subscribe: { allow: subjects, deny: ["$JS.EVENT.>"] },
  };
}

/** Whether NATS subject pattern `pattern` (with `*` and `>` wildcards) matches `subject`. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

const permits = (rule: { allow: string[]; deny: string[] }, subject: string): boolean =>
  rule.allow.some((a) => subjectMatches(a, subject)) && !rule.deny.some((d) => subjectMatches(d, subject));

/** Whether `p` lets its role publish to `subject` (as nats-server decides: an allow, and no deny). */
export const mayPublish = (p: Permissions, subject: string): boolean => permits(p.publish, subject);
/** Whether `p` lets its role subscribe to `subject`. */
export const maySubscribe = (p: Permissions, subject: string): boolean => permits(p.subscribe, subject);
