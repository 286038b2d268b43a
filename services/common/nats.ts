import {
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { readFileSync } from "node:fs";
import { connect, errors, nuid, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { processSetting, type ProcessConfig } from "./config.js";
import { ConfigError, DwcpError } from "./errors.js";
import type { Logger } from "./logger.js";
import { SeedKey } from "./seed-key.js";

export interface Nats {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

/**
 * How a process proves who it is to NATS: its role's nkey (the NATS user), a client certificate
 * from the deployment's CA (TLS is verified both ways) and its role's inbox prefix, the only
 * inbox its permissions let it subscribe to.
 */
export interface NatsCredentials {
  role: string;
  /** File holding the role's nkey seed (SU...). */
  nkeyFile: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A credentials file could not be read: names the file, never its content. */
export class NatsCredentialsError extends DwcpError {
  readonly code = "NATS_CREDENTIALS_UNREADABLE";
  readonly retryable = false;
}

/**
 * A service's NATS credentials from its settings (DWCP_NKEY_FILE, DWCP_TLS_CA, DWCP_TLS_CERT,
 * DWCP_TLS_KEY). Without them it refuses to start, unless DWCP_NATS_INSECURE=on, which connects
 * anonymously in plaintext and says so in the log.
 */
export function serviceCredentials(
  cfg: Pick<ProcessConfig, "nkeyFile" | "tlsCa" | "tlsCert" | "tlsKey" | "natsInsecure">,
  role: string,
  log?: Logger,
): NatsCredentials | undefined {
  const { nkeyFile, tlsCa, tlsCert, tlsKey } = cfg;
  // The explicit setting wins: a process may hold its role's files for other links (its nkey
  // signs events, its certificate serves the data channel) and still meet a NATS without auth.
  if (cfg.natsInsecure === "on") {
    log?.warn(
      { role },
      "DWCP_NATS_INSECURE=on: connecting to NATS without credentials or TLS; use only on a trusted test network",
    );
    return undefined;
  }
  if (nkeyFile !== undefined && tlsCa !== undefined && tlsCert !== undefined && tlsKey !== undefined)
    return { role, nkeyFile, caFile: tlsCa, certFile: tlsCert, keyFile: tlsKey };
  const missing = Object.entries({
    DWCP_NKEY_FILE: nkeyFile,
    DWCP_TLS_CA: tlsCa,
    DWCP_TLS_CERT: tlsCert,
    DWCP_TLS_KEY: tlsKey,
  }).filter(([, v]) => v === undefined);
  throw new ConfigError(
    missing.map(
      ([name]) =>
        `${name}: not set; a ${role} needs its role's NATS credentials (\`dwcp up\` provisions them in ` +
        `<data dir>/creds and <data dir>/pki), or DWCP_NATS_INSECURE=on for a NATS without auth`,
    ),
  );
}

/**
 * The inbox prefix of a role: replies to its requests arrive under `_INBOX_<role>.`, which its
 * permissions (credentials/permissions.ts) let it subscribe to and no other role.
 */
export const roleInboxPrefix = (role: string): string => `_INBOX_${role}`;

function readSeed(file: string): SeedKey {
  try {
    return new SeedKey(readFileSync(file, "utf8"));
  } catch (err) {
    throw new NatsCredentialsError(`cannot read the nkey seed file ${file}`, { cause: err });
  }
}

/** The connect options of `credentials`: nkey authentication, mutual TLS, the role's inbox. */
export function credentialOptions(c: NatsCredentials) {
  const key = readSeed(c.nkeyFile);
  return {
    authenticator: key.authenticator(),
    tls: { caFile: c.caFile, certFile: c.certFile, keyFile: c.keyFile },
    inboxPrefix: roleInboxPrefix(c.role),
  };
}

/** The inbox prefix the connection was opened with; request helpers build their inboxes on it. */
export function inboxPrefixOf(nc: NatsConnection): string | undefined {
  return (nc as NatsConnection & { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
}

/**
 * Where the answers of host `host`'s services (its mover, its replication service) to role
 * `requester` go: `<requester's inbox>.rpc.<host>.` and a token. A service may publish there for
 * its own host and no other (credentials/permissions.ts), which is all it needs to answer; it
 * holds no allow_responses, with which nats-server records the reply subject of every message it
 * delivers to the user (each event, work item and stream read a mover receives, none of them
 * answered) for as long as the permission lasts, and 2.9 scans every record on each delivery once
 * there are 4,096 of them.
 */
export const hostReplies = (requester: string, host: string): string => `${roleInboxPrefix(requester)}.rpc.${host}.>`;

/**
 * A request to a service of `host`, answered on a reply subject of hostReplies' form: a
 * subscription for the one answer, then the request (nats.js's own request with its reply subject
 * set: its timeout, no-responders and permission errors are the same as a plain request's).
 */
export function requestHost(
  nc: NatsConnection,
  subject: string,
  host: string,
  payload: string | Uint8Array,
  opts: { timeout: number; headers?: MsgHdrs },
): Promise<Msg> {
  return nc.request(subject, payload, { ...opts, noMux: true, reply: hostReplySubject(nc, host) });
}

/** A new reply subject of hostReplies' form on `nc`'s inbox, for a request to a service of `host`. */
export const hostReplySubject = (nc: NatsConnection, host: string): string =>
  `${inboxPrefixOf(nc) ?? "_INBOX"}.rpc.${host}.${nuid.next()}`;

export interface ConnectOptions {
  /** The role's credentials; undefined connects anonymously (a server without auth). */
  credentials?: NatsCredentials | undefined;
  /**
   * Wait and retry until the server is reachable (default true, for services). The CLI passes
   * false so that a refused or missing server is reported at once.
   */
  waitOnFirstConnect?: boolean;
  /** How long one attempt to reach the server may take, in ms (default 5000). */
  timeoutMs?: number;
  /**
   * A command-line process: the first publish the server refuses for want of permission closes
   * the connection (its request would otherwise wait out its timeout) and is kept for
   * permissionDenied() to report.
   */
  failOnPermissionViolation?: boolean;
}

/** NATS refused a publish for want of permission: the credentials are another role's. */
export class NatsPermissionError extends DwcpError {
  readonly code = "NATS_PERMISSION_DENIED";
  readonly retryable = false;
}

let denied: NatsPermissionError | undefined;

/** The permission refusal that closed a command-line connection, if one did. */
export const permissionDenied = (): NatsPermissionError | undefined => denied;

function closeOnPermissionViolation(nc: NatsConnection, role: string | undefined): void {
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type !== "error" || !(s.error instanceof errors.PermissionViolationError)) continue;
      if (s.error.operation !== "publish") continue;
      denied ??= new NatsPermissionError(
        `NATS refused the ${role ?? "anonymous"} credentials permission to publish to ${s.error.subject}: ` +
          "this command needs another role's credentials (the cli role's for migrations and status, the " +
          "admin role's for init, backup and restore-log: --data-dir D picks the right ones from D/creds)",
        { cause: s.error },
      );
      await nc.close();
      return;
    }
  })();
}

/**
 * NATS did not take the connection: nothing listens there, the TLS handshake failed, or the
 * server wants credentials this process does not have. The message says what to pass.
 */
export class NatsConnectError extends DwcpError {
  readonly code = "NATS_CONNECT_FAILED";
  readonly retryable = false;
}

let processDefaults: ConnectOptions = {};

/**
 * For a command-line process: every connection it opens without explicit options (its own and
 * those of the library calls it makes: replay, backup, federation status) uses `o`.
 */
export function setProcessConnectDefaults(o: ConnectOptions): void {
  processDefaults = { ...o };
}

const HOW_TO_AUTH =
  "pass --data-dir of the stack (the `dwcp up` data dir, default .dwcp) or " +
  "--creds FILE --tls-ca FILE --tls-cert FILE --tls-key FILE " +
  "(or DWCP_NKEY_FILE, DWCP_TLS_CA, DWCP_TLS_CERT, DWCP_TLS_KEY)";

function refused(url: string, o: ConnectOptions, err: unknown): NatsConnectError {
  const detail = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown }).code;
  if (
    code === "ECONNREFUSED" ||
    /ECONNREFUSED|connection refused|timeout|timed out|ENOTFOUND|EHOSTUNREACH/i.test(detail)
  )
    return new NatsConnectError(
      `cannot reach NATS at ${url} (${detail}); start a stack with \`dwcp up\` or pass --nats URL / DWCP_NATS_URL`,
      { cause: err },
    );
  if (o.credentials === undefined)
    return new NatsConnectError(
      `NATS at ${url} refused the connection: it needs credentials; ${HOW_TO_AUTH} (${detail})`,
      { cause: err },
    );
  return new NatsConnectError(
    `NATS at ${url} refused the ${o.credentials.role} credentials (${o.credentials.nkeyFile}, ` +
      `${o.credentials.certFile}): ${detail}`,
    { cause: err },
  );
}

/**
 * The first connection of a command, given up after `ms` in all (the client's own timeout covers
 * one attempt's handshake, not a TCP connect that is never answered); a connection that completes
 * later is closed.
 */
async function withinDeadline(connecting: Promise<NatsConnection>, ms: number): Promise<NatsConnection> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([connecting, expired]);
  } catch (err) {
    void connecting.then((nc) => nc.close()).catch(() => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** How often a connection pings its server; two unanswered pings make it stale (see connectNats). */
export const PING_INTERVAL_MS = 10_000;

/**
 * Connects and keeps reconnecting forever: a service outlives a NATS restart or leader election.
 * `waitOnFirstConnect` lets a service start before its server is reachable; without it a first
 * connection that fails is a NatsConnectError that says what is missing.
 */
export async function connectNats(url: string, name: string, log?: Logger, opts?: ConnectOptions): Promise<Nats> {
  const o = opts ?? processDefaults;
  const wait = o.waitOnFirstConnect ?? true;
  let nc: NatsConnection;
  try {
    const connecting = connect({
      servers: url.split(","),
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      // A connection whose path went away (a WAN outage) is found stale after two unanswered
      // pings and replaced by a new one, which works as soon as the path is back. With the
      // client's default (a ping every 2 min) it waited on TCP's retransmission timer, which
      // doubles through an outage: b's mover was back 30 s after a 30 s cut ended.
      pingInterval: PING_INTERVAL_MS,
      maxPingOut: 2,
      waitOnFirstConnect: wait,
      timeout: o.timeoutMs ?? 5_000,
      // Without this the client builds an Error (a captured stack) for every request and every
      // publish awaiting its PubAck, in case it fails: a tenth of a busy coordinator's or mover's
      // CPU. A failed request still says what failed; only the caller's async stack is missing.
      noAsyncTraces: true,
      ...(o.credentials ? credentialOptions(o.credentials) : {}),
    });
    nc = wait ? await connecting : await withinDeadline(connecting, o.timeoutMs ?? processSetting("connectTimeoutMs"));
  } catch (err) {
    if (wait || err instanceof NatsCredentialsError) throw err;
    throw refused(url, o, err);
  }
  coalesceWrites(nc);
  if (o.failOnPermissionViolation) closeOnPermissionViolation(nc, o.credentials?.role);
  if (log) {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error")
          log.warn({ nats: s.type }, `nats ${s.type}`);
        else if (s.type !== "ping")
          log.debug({ nats: s.type, ...("data" in s ? { data: String(s.data) } : {}) }, `nats ${s.type}`);
      }
    })();
  }
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  return { nc, js: jetstream(nc, { timeout: 10_000 }), jsm };
}

/** The parts of the client's protocol handler that coalesceWrites uses (not in its typings). */
interface ProtocolInternals {
  flushPending?: () => void;
  outbound?: { size(): number };
  pendingLimit?: number;
}

/**
 * Makes the connection write what it has to send once per event-loop turn instead of once per
 * microtask burst. The client flushes its outbound buffer in a microtask queued by the first
 * message after a flush, so a busy service whose appends, acks and requests each come out of
 * their own chain of awaits wrote a TLS record and made a syscall for nearly every message: a
 * fifth of a coordinator's CPU. Deferred to setImmediate, everything a turn produces goes out in
 * one write. A buffer past the client's own limit (32 KiB) is still written at once, and a close
 * writes what is pending first. Returns false (and changes nothing) on a client without the
 * internals it relies on.
 */
export function coalesceWrites(nc: NatsConnection): boolean {
  const proto = (nc as unknown as { protocol?: ProtocolInternals }).protocol;
  if (typeof proto?.flushPending !== "function" || typeof proto.outbound?.size !== "function") return false;
  const flushNow = proto.flushPending.bind(proto);
  const limit = proto.pendingLimit ?? 32 * 1024;
  let queued = false;
  proto.flushPending = () => {
    if ((proto.outbound?.size() ?? 0) >= limit) return flushNow();
    if (queued) return;
    queued = true;
    setImmediate(() => {
      queued = false;
      flushNow();
    });
  };
  const close = nc.close.bind(nc);
  nc.close = () => {
    flushNow();
    return close();
  };
  return true;
}

/**
 * The server still holds an earlier copy of this append (same msgID) in flight: it is neither
 * stored nor refused yet. 2.9 answers such a resend with `duplicate` and sequence 0, >= 2.10 with
 * err_code 10158. Resent until it resolves; thrown only when the append's time is up.
 */
export class AppendInFlightError extends DwcpError {
  readonly code = "APPEND_IN_FLIGHT";
  readonly retryable = true;
  constructor(
    readonly subject: string,
    readonly msgID: string,
  ) {
    super(`${subject}: an earlier copy of ${msgID} is still being stored`);
  }
}

/**
 * A control-plane hiccup rather than a fault of the work at hand: a request timed out, the
 * connection dropped, JetStream is electing a leader (2.9 answers "jetstream is not enabled"
 * meanwhile), or an earlier copy of a resent publish is still in flight (10158 on >= 2.10).
 * Callers retry or nak; they do not record a failure against the batch.
 */
export function isTransientNatsError(err: unknown): boolean {
  return (
    err instanceof errors.TimeoutError ||
    err instanceof errors.ConnectionError ||
    err instanceof errors.RequestError ||
    err instanceof errors.NoRespondersError ||
    err instanceof AppendInFlightError ||
    (err instanceof Error && err.name === "JetStreamNotEnabled") ||
    (err instanceof JetStreamApiError && (err.code === 10008 || err.code === 10158 || err.status === 503))
  );
}

/**
 * Runs `fn` again while it fails with a transient NATS error (a leader election, a server still
 * recovering its streams after a restart), for up to `forMs` (default 30000), `pauseMs` (default
 * 250) apart and never past the deadline; then the last error is thrown. Any other error is
 * thrown at once. For idempotent calls only (creating streams and consumers, a publish resent
 * with its msgID, an ack).
 */
export async function retryTransient<T>(
  fn: () => Promise<T>,
  o: { forMs?: number; pauseMs?: number } = {},
): Promise<T> {
  const deadline = performance.now() + (o.forMs ?? 30_000);
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransientNatsError(err)) throw err;
      const left = deadline - performance.now();
      if (left <= 0) throw err;
      // A timed-out try has waited already; "no responders" and "in flight" come back at once.
      await new Promise((resolve) => setTimeout(resolve, Math.min(o.pauseMs ?? 250, left)));
    }
  }
}

const ACK = new TextEncoder().encode("+ACK");

/**
 * Acks a message and waits until the consumer leader confirms it, resending the ack through
 * transient errors (a consumer leader election, a reconnect) for up to `resendForMs` (default
 * 15000). `JsMsg.ackAck` sends only once: an ack lost in an election brings the message back
 * after its ack wait, and a work item's batch would be moved again. Resolves false, and does not
 * throw, when no confirmation came; the message then comes back, so handling must be idempotent.
 */
export async function ackConfirmed(
  nc: NatsConnection,
  m: JsMsg,
  o: { resendForMs?: number; tryTimeoutMs?: number } = {},
): Promise<boolean> {
  // The message's ack subject: JsMsg's implementation has it, its interface does not say so.
  const reply = (m as JsMsg & { reply?: unknown }).reply;
  if (typeof reply !== "string" || reply === "") return false;
  try {
    await retryTransient(() => nc.request(reply, ACK, { timeout: o.tryTimeoutMs ?? 2_000 }), {
      forMs: o.resendForMs ?? 15_000,
    });
    return true;
  } catch {
    return false;
  }
}
