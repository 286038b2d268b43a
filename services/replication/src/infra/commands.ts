import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { DwcpError } from "#common/errors.js";
import { hostReplySubject } from "#common/nats.js";
import { safeJson } from "#common/json.js";
import type { Logger } from "#common/logger.js";
import { Id } from "#schemas/common.js";
import {
  ReplicationCommand,
  ReplicationReply,
  type ReplicateVm,
  type RestoreVm,
  type ReplicationCommand as Command,
} from "#schemas/replication.js";

/** Request/reply subject of the replication service of one source host (queue group "replication"). */
export const replicationRpc = (host: string): string => `dwcp.replication.${host}.rpc`;
export const REPLICATION_QUEUE = "replication";

/** How often a running command says it is still working, in milliseconds. */
export const HEARTBEAT_MS = 2_000;

/** One reply of a command; the service may send several to one request (see ReplicationReply). */
export type Reply = ReplicationReply;
export type Send = (reply: Reply) => void;

/**
 * Serves commands on the host's subject. Every message is validated here, once: an invalid one is
 * logged and answered ReplicationRejected (INVALID_COMMAND), and the subscription goes on. A
 * handler that throws is logged and answered ReplicationFailed; it never ends the subscription.
 */
export function serveCommands(
  nc: NatsConnection,
  host: string,
  log: Logger,
  handle: (cmd: Command, send: Send) => Promise<void>,
): Subscription {
  return nc.subscribe(replicationRpc(host), {
    queue: REPLICATION_QUEUE,
    callback: (_err, msg) => void dispatch(msg, log, handle),
  });
}

async function dispatch(msg: Msg, log: Logger, handle: (cmd: Command, send: Send) => Promise<void>): Promise<void> {
  const send: Send = (reply) => {
    if (msg.reply) msg.respond(JSON.stringify(reply));
  };
  const raw = safeJson(msg.data);
  const parsed = ReplicationCommand.safeParse(raw);
  if (!parsed.success) {
    const message = `invalid replication command: ${parsed.error.message.slice(0, 2000)}`;
    const commandId = idOf(raw);
    log.error({ subject: msg.subject, commandId, issues: parsed.error.issues.slice(0, 20) }, message);
    send({ type: "ReplicationRejected", version: 1, ...(commandId ? { commandId } : {}), code: INVALID, message });
    return;
  }
  const cmd = parsed.data;
  const commandId = cmd.type === "PingReplication" ? undefined : cmd.commandId;
  try {
    await handle(cmd, send);
  } catch (err) {
    log.error({ err, commandId }, "replication command failed");
    send({
      type: "ReplicationFailed",
      version: 1,
      ...(commandId ? { commandId } : {}),
      code: err instanceof DwcpError ? err.code : "INTERNAL",
      retryable: err instanceof DwcpError ? err.retryable : false,
      message: String((err as Error)?.message ?? err).slice(0, 4096),
    });
  }
}

const INVALID = "INVALID_COMMAND";

/** The commandId of a message that failed validation, when it has a usable one (for the reply). */
function idOf(raw: unknown): string | undefined {
  const id = (raw as { commandId?: unknown } | undefined)?.commandId;
  return Id.safeParse(id).success ? (id as string) : undefined;
}

/** No replication service subscribes to the host's subject. */
export class ReplicationServiceUnavailableError extends DwcpError {
  readonly code = "REPLICATION_SERVICE_UNAVAILABLE";
  readonly retryable = true;
  constructor(
    readonly host: string,
    hint: string,
  ) {
    super(
      `no replication service for host ${host} answers on ${replicationRpc(host)}; ` +
        `start one on that host: ${hint} (\`dwcp up\` starts one per host)`,
    );
  }
}

/** The service accepted a command and then went silent (stopped, killed or cut off). */
export class ReplicationServiceLostError extends DwcpError {
  readonly code = "REPLICATION_SERVICE_LOST";
  readonly retryable = true;
  constructor(
    readonly host: string,
    silentMs: number,
  ) {
    super(
      `the replication service for host ${host} stopped answering (nothing for ${silentMs} ms); ` +
        "whether the sync committed shows in `dwcp snapshots`",
    );
  }
}

/** The service refused the command or the sync failed; `remoteCode` is the service's code. */
export class ReplicationCommandError extends DwcpError {
  readonly code = "REPLICATION_COMMAND_FAILED";
  constructor(
    readonly remoteCode: string,
    readonly retryable: boolean,
    message: string,
  ) {
    super(`${message} (${remoteCode})`);
  }
}

export interface RequestOptions {
  /** Time for the service to accept the command, in milliseconds. Default 5000. */
  acceptTimeoutMs?: number;
  /** Silence after which a running command counts as lost, in milliseconds. Default 30000. */
  silenceMs?: number;
  /** Said in the no-service error: how to start the service. */
  startHint?: string;
}

type Final = Extract<Reply, { type: "ReplicationSynced" | "ReplicationRestored" | "ReplicationPong" }>;
export type ReplicationRestored = Extract<Reply, { type: "ReplicationRestored" }>;
export type ReplicationSynced = Extract<Reply, { type: "ReplicationSynced" }>;
export type ReplicationPong = Extract<Reply, { type: "ReplicationPong" }>;

/** The final reply `r`, which must be of `type`: anything else is a protocol error. */
function expectReply<T extends Final["type"]>(r: Final, type: T): Extract<Final, { type: T }> {
  if (r.type !== type) throw new ReplicationCommandError("PROTOCOL", false, `unexpected reply ${r.type}`);
  return r as Extract<Final, { type: T }>;
}

/** Runs one sync on the source host's service and returns what it did (see requestReplication). */
export async function replicateVm(
  nc: NatsConnection,
  cmd: ReplicateVm,
  opts?: RequestOptions,
): Promise<ReplicationSynced> {
  return expectReply(await requestReplication(nc, cmd.source.host, cmd, opts), "ReplicationSynced");
}

/** Restores on the target host's service and returns what it wrote (see requestReplication). */
export async function restoreVm(
  nc: NatsConnection,
  cmd: RestoreVm,
  opts?: RequestOptions,
): Promise<ReplicationRestored> {
  return expectReply(await requestReplication(nc, cmd.to.host, cmd, opts), "ReplicationRestored");
}

/** Asks whether the host's service is up and which VMs it is syncing (a readiness probe). */
export async function pingReplication(
  nc: NatsConnection,
  host: string,
  opts?: RequestOptions,
): Promise<ReplicationPong> {
  const ping = { type: "PingReplication", version: 1 } as const;
  return expectReply(await requestReplication(nc, host, ping, opts), "ReplicationPong");
}

/**
 * Sends one command to the host's replication service and waits for its final reply, however
 * long the command runs, as long as heartbeats keep coming. No subscriber at all is reported at
 * once (NATS "no responders"), a silent one after `acceptTimeoutMs`.
 */
export async function requestReplication(
  nc: NatsConnection,
  host: string,
  cmd: ReplicateVm | RestoreVm | { type: "PingReplication"; version: 1 },
  opts: RequestOptions = {},
): Promise<Final> {
  // The service answers on a reply subject that names its host, which its permissions allow.
  const inbox = hostReplySubject(nc, host);
  const sub = nc.subscribe(inbox);
  const hint = opts.startHint ?? `dwcp replication-service --host ${host}`;
  let timer: NodeJS.Timeout | undefined;
  let failure: Error | undefined;
  const arm = (ms: number, err: () => Error): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      sub.unsubscribe();
      failure = err();
    }, ms);
  };
  arm(opts.acceptTimeoutMs ?? 5_000, () => new ReplicationServiceUnavailableError(host, hint));
  try {
    nc.publish(replicationRpc(host), JSON.stringify(cmd), { reply: inbox });
    for await (const m of sub) {
      if (m.data.length === 0 && m.headers?.status === "503") throw new ReplicationServiceUnavailableError(host, hint);
      const parsed = ReplicationReply.safeParse(safeJson(m.data));
      if (!parsed.success)
        throw new ReplicationCommandError("PROTOCOL", false, `invalid reply from the replication service on ${host}`);
      const r = parsed.data;
      switch (r.type) {
        case "ReplicationAccepted":
        case "ReplicationWorking":
          arm(opts.silenceMs ?? 30_000, () => new ReplicationServiceLostError(host, opts.silenceMs ?? 30_000));
          break;
        case "ReplicationFailed":
          throw new ReplicationCommandError(r.code, r.retryable, r.message);
        case "ReplicationRejected":
          throw new ReplicationCommandError(r.code, false, r.message);
        case "ReplicationSynced":
        case "ReplicationRestored":
        case "ReplicationPong":
          return r;
        default:
          r satisfies never;
      }
    }
    throw failure ?? new ReplicationServiceLostError(host, 0);
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
}
