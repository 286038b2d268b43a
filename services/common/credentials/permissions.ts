import {
  CMD_STREAM,
  COORDINATOR_DURABLE,
  EVT_STREAM,
  MOVER_DURABLE,
  MOVERS_BUCKET,
  SUMMARY_STREAM,
  subjects,
  workStream,
} from "../layout.js";
import { hostReplies, roleInboxPrefix as inboxPrefixOf } from "../nats.js";
import { EVENT_MIRROR_PREFIX, FED_MIRROR_PREFIX, FED_STREAM_PREFIX } from "../remote-movers.js";
import { moverHostOf, replicationHostOf, type Role } from "./provision.js";

// What each NATS role may publish and subscribe to: least privilege, found by running every flow
// against a nats-server with these permissions on. Pure: server-config.ts renders it for
// nats-server, the unit spec pins it. Streams, consumers and the registry are created by admin
// before any service starts, so no service role holds a create, update or delete API.

/** One role's NATS permissions, as nats-server's `permissions` block takes them. */
export interface Permissions {
  publish: { allow: string[]; deny: string[] };
  subscribe: { allow: string[]; deny: string[] };
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

/**
 * How far the coordinator and the movers are behind (`dwcp top`): the info of the coordinator's
 * command durable and of every work queue's mover durable, which carries num_pending and
 * num_ack_pending. `*` is a whole token here, so it names the durable "mover" on any stream (only
 * the work queues have one); info only, no pull, no ack.
 */
const READ_CONSUMER_LAG = [
  `${API}.CONSUMER.INFO.${CMD_STREAM}.${COORDINATOR_DURABLE}`,
  `${API}.CONSUMER.INFO.*.${MOVER_DURABLE}`,
];

/** Every role: the JetStream account info the client asks for when it opens JetStream. */
const BASE = [`${API}.INFO`, `${API}.STREAM.NAMES`];
/** Every role reads the events and the mover registry (status, replay, the registry). */
const READ = [...BASE, ...readStream(EVT_STREAM), ...readStream(KV_STREAM), `${API}.STREAM.INFO.${CMD_STREAM}`];
/**
 * The coordinator's migration summaries (DWCP_SUMMARY): the coordinator publishes them, the roles
 * that show migrations (cli, observer) read them; no other role may do either.
 */
const READ_SUMMARIES = readStream(SUMMARY_STREAM);

/**
 * No role holds nats-server's allow_responses: a service answers on reply subjects that name its
 * host, which its publish permissions allow (hostReplies).
 */
function role(name: string, publish: string[], subscribe: string[]): Permissions {
  return {
    publish: { allow: [...new Set(publish)], deny: [...ADMIN_ONLY] },
    subscribe: { allow: [`${inboxPrefixOf(name)}.>`, ...new Set(subscribe)], deny: [] },
  };
}

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

/** Where a deployment sits in a federation: its site and the other sites of the federation. */
export interface FederationScope {
  site: string;
  peers: readonly string[];
}

/**
 * Looking a host's mover up in the registry of each peer site, through the peer's JetStream
 * domain (RemoteMovers): reads of that one stream, nothing else of the peer.
 */
const readPeerMovers = (f: FederationScope | undefined): string[] =>
  (f?.peers ?? []).flatMap((p) => [
    `$JS.${p}.API.STREAM.INFO.${KV_STREAM}`,
    `$JS.${p}.API.STREAM.MSG.GET.${KV_STREAM}`,
    `$JS.${p}.API.DIRECT.GET.${KV_STREAM}`,
    `$JS.${p}.API.DIRECT.GET.${KV_STREAM}.>`,
  ]);

/** A site's federation streams: its own log and its mirrors of every peer's log and migration events. */
const readFederation = (f: FederationScope | undefined): string[] =>
  f === undefined
    ? []
    : [
        ...readStream(`${FED_STREAM_PREFIX}${f.site}`),
        ...f.peers.flatMap((p) => [
          ...readStream(`${FED_MIRROR_PREFIX}${p}`),
          ...readStream(`${EVENT_MIRROR_PREFIX}${p}`),
        ]),
      ];

/**
 * The permissions of `r` in a deployment of `roles` (the coordinator's work queues are those of
 * its mover roles); `federation` when the deployment is one site of a federation. Admin, the one
 * role with `>`, is kept out of the other roles' inboxes by name (a deny on `_INBOX_*.>` would
 * deny its own).
 */
export function permissionsOf(r: Role, roles: readonly Role[] = [], federation?: FederationScope): Permissions {
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
        subjects.summaries,
        ...READ_SUMMARIES,
        ...hostsOf(roles).flatMap(dispatchTo),
        "dwcp.mover.*.rpc",
        ...readPeerMovers(federation),
      ],
      ["dwcp.evt.>", `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.${MOVER_DURABLE}`],
    );
  }
  if (r === "cli") {
    return role(
      r,
      [
        ...READ,
        ...READ_SUMMARIES,
        ...READ_CONSUMER_LAG,
        ...readFederation(federation),
        subjects.startMigration,
        subjects.cancelMigration,
        subjects.setMigrationOptions,
        "dwcp.replication.*.rpc",
      ],
      [subjects.progressAll],
    );
  }
  if (r === "observer")
    return role(r, [...READ, ...READ_SUMMARIES, ...readFederation(federation)], [subjects.progressAll]);
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
        // Progress of the batches it sends (signed; a reader believes only the source host's mover).
        subjects.progressAll,
        // A live migration's source asks its destination mover to prepare, finish or abort.
        "dwcp.mover.*.live",
        ...readPeerMovers(federation),
        // Its answers: to the coordinators' RPCs (this site's and, in a federation, the others',
        // which share the role and so the inbox) and to the other movers' live requests, on the
        // reply subjects that name this host (requestHost); no allow_responses.
        hostReplies("coordinator", mover),
        ...roles.filter((o) => o !== r && moverHostOf(o) !== undefined).map((o) => hostReplies(o, mover)),
      ],
      [`dwcp.mover.${mover}.rpc`, `dwcp.mover.${mover}.live`, "dwcp.evt.migration.>"],
    );
  }
  const replication = replicationHostOf(r);
  if (replication !== undefined) {
    // A command is answered, with heartbeats for as long as a sync runs, on the reply subjects
    // that name this host under the inboxes of the roles that may send one (the cli's, admin's).
    return role(
      r,
      [...READ, "dwcp.evt.replication.>", hostReplies("cli", replication), hostReplies("admin", replication)],
      [`dwcp.replication.${replication}.rpc`],
    );
  }
  return role(r, BASE, []);
}

/**
 * What crosses site `site`'s leafnode link, as the hub's permissions of the site's leafnode user
 * (publish: what the site may send into the hub; subscribe: the interest it may register, so
 * what it may receive). It receives requests to its own JetStream domain, and sends to the other
 * sites' domains only reads of the streams a site mirrors or looks movers up in (their federation
 * log, migration events and mover registry) and the creation of the mirrors' consumers on them:
 * no stream or consumer is created on anything else, changed or deleted across a link. Both ways:
 * the coordinators' control RPCs to the movers of the other sites' hosts (`hosts`: each site's),
 * the mirrors' deliveries and flow control, and replies to `requesters`, the roles that ask
 * another domain (admin, coordinator, movers: see crossSiteRequesters). No message is stored across a link (the
 * sites' remotes deny dwcp.fed/cmd/evt/work too) and no advisory crosses it.
 */
export function leafPermissions(
  site: string,
  hosts: Readonly<Record<string, readonly string[]>>,
  requesters: readonly Role[],
): Permissions {
  const sites = Object.keys(hosts);
  const reads = (d: string): string[] =>
    [`${FED_STREAM_PREFIX}${d}`, EVT_STREAM, KV_STREAM].flatMap((stream) =>
      [
        `STREAM.INFO.${stream}`,
        `STREAM.MSG.GET.${stream}`,
        `DIRECT.GET.${stream}`,
        `DIRECT.GET.${stream}.>`,
        `CONSUMER.CREATE.${stream}`,
        `CONSUMER.CREATE.${stream}.>`,
        `CONSUMER.INFO.${stream}.>`,
      ].map((s) => `$JS.${d}.API.${s}`),
    );
  // Mirror deliveries, their flow control and the answers to the mirrors' consumer creates, and
  // the replies to the roles that ask another domain (`_INBOX_*` is no wildcard: one per role).
  const inboxes = [...new Set(requesters)].map((r) => `${inboxPrefixOf(r)}.>`);
  const both = ["$JS.M.>", "$JS.FC.>", "$JSC.R.>", "_INBOX.>", ...inboxes];
  const deny = ["$JS.EVENT.>", "$SYS.>"];
  const peers = sites.filter((d) => d !== site);
  // A coordinator's control RPCs to the movers of another site's hosts (probe, finalize, abort).
  const rpc = (d: string): string[] => (hosts[d] ?? []).map((h) => `dwcp.mover.${h}.rpc`);
  // The movers' interest in their RPCs is a queue subscription. 2.9.10 does not carry a queue
  // subscription's interest over a leafnode whose permissions allow its subject only as a literal
  // (probed: `dwcp.mover.<h>.rpc` left the requester with no responders; `dwcp.mover.<h>.*`
  // carries it), so the site's own hosts are allowed by their last token.
  const ownMovers = (hosts[site] ?? []).map((h) => `dwcp.mover.${h}.*`);
  return {
    publish: { allow: [...peers.flatMap((d) => [`$JS.${d}.API.INFO`, ...reads(d), ...rpc(d)]), ...both], deny },
    subscribe: { allow: [`$JS.${site}.API.>`, ...ownMovers, ...both], deny },
  };
}

/** The roles of a federation that send requests to another site's domain (RemoteMovers, probes). */
export const crossSiteRequesters = (roles: readonly Role[]): Role[] =>
  roles.filter((r) => r === "admin" || r === "coordinator" || moverHostOf(r) !== undefined);

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
