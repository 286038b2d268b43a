// An attacker on the network, or a compromised service, against a real `dwcp up` stack: the
// server refuses what the role may not do, and the refusal is visible (a permission error naming
// the subject, a TLS or authorization failure).
import { connect as tlsConnect } from "node:tls";
import { connect as netConnect } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, nkeyAuthenticator } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCertificateAuthority, issueCertificate, roleIdentity } from "#common/pki.js";
import { CMD_STREAM, SUMMARY_STREAM, subjects, workStream } from "#common/layout.js";
import { INSECURE } from "#common/signing.js";
import { readSummaries } from "#common/summaries.js";
import { silentLogger } from "#common/logger.js";
import { connectNats, NatsConnectError, requestHost, type Nats } from "#common/nats.js";
import type { Role } from "#common/credentials/provision.js";
import { pingReplication, replicationRpc } from "#replication";
import { serveCommands } from "../../services/replication/src/infra/commands.js";
import { startTestStack } from "../support/stack.js";

type TestStack = Awaited<ReturnType<typeof startTestStack>>;

/** The messages of an error and its causes. */
function messagesOf(err: unknown): string {
  const out: string[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause) out.push(`${e.name}: ${e.message}`);
  return out.join(" <- ");
}

/** Expects `p` to fail with the server's permission violation for publishing to `subject`. */
async function deniedPublish(p: Promise<unknown>, subject: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `publishing to ${subject} was allowed`).toBeDefined();
  expect(messagesOf(err)).toContain(`Permissions Violation for Publish to "${subject}"`);
}

describe("NATS least privilege and TLS", () => {
  let stack: TestStack;
  const open: Nats[] = [];
  const as = async (role: Role): Promise<Nats> => {
    const n = await stack.connect(role, `attacker-as-${role}`);
    open.push(n);
    return n;
  };
  let scratch: string;
  const serverLog = (): string => readFileSync(join(stack.opts.dataDir, "logs", "nats-server.log"), "utf8");

  beforeAll(async () => {
    stack = await startTestStack();
    scratch = mkdtempSync(join(tmpdir(), "dwcp-attacker-"));
  });
  afterAll(async () => {
    await Promise.all(open.map((n) => n.nc.close()));
    await stack?.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("refuses an anonymous connection, and says it needs credentials", async () => {
    // Without anything: the CLI's message says what to pass.
    const anon = connectNats(stack.url, "anonymous", undefined, { waitOnFirstConnect: false });
    await expect(anon).rejects.toBeInstanceOf(NatsConnectError);
    await expect(anon).rejects.toThrow(/refused the connection: it needs credentials; pass --data-dir/);
    // With a valid client certificate but no nkey: the server's authorization refusal.
    const cli = stack.credentialsOf("cli");
    const noUser = connect({
      servers: stack.url,
      tls: { caFile: cli?.caFile ?? "", certFile: cli?.certFile ?? "", keyFile: cli?.keyFile ?? "" },
      reconnect: false,
    });
    await expect(noUser).rejects.toThrow(/Authorization Violation/);
  });

  it("refuses a plaintext connection: TLS is required", async () => {
    const port = Number(new URL(stack.url).port);
    const said = await new Promise<string>((resolve, reject) => {
      const s = netConnect(port, "127.0.0.1");
      let text = "";
      s.setEncoding("utf8");
      s.on("data", (d: string) => {
        text += d;
        if (text.includes("\r\n") && !text.includes("CONNECT_SENT")) {
          expect(text).toMatch(/"tls_required":true/);
          s.write('CONNECT {"verbose":false}\r\nPING\r\n');
          text += "CONNECT_SENT";
        }
      });
      s.on("error", reject);
      s.on("close", () => resolve(text));
    });
    // The server never answers the plaintext CONNECT and PING: it drops the connection.
    expect(said.split("CONNECT_SENT")[1]).toBe("");
    await expect.poll(() => serverLog()).toMatch(/TLS handshake error/);
  });

  it("refuses a client certificate from another CA", async () => {
    const evilCa = await createCertificateAuthority("evil CA");
    const evil = await issueCertificate(evilCa, {
      commonName: "cli",
      dnsNames: ["localhost"],
      ipAddresses: ["127.0.0.1"],
      uris: [roleIdentity("cli")],
    });
    const certFile = join(scratch, "evil.pem");
    const keyFile = join(scratch, "evil.key");
    writeFileSync(certFile, evil.cert);
    writeFileSync(keyFile, evil.key, { mode: 0o600 });
    const cli = stack.credentialsOf("cli");
    // The server rejects the certificate during the handshake, before any nkey is looked at.
    const port = Number(new URL(stack.url).port);
    const handshake = await new Promise<string>((resolve) => {
      const raw = netConnect(port, "127.0.0.1");
      raw.once("data", () => {
        const s = tlsConnect({
          socket: raw,
          ca: [evil.cert, readFileSync(cli?.caFile ?? "", "utf8")],
          cert: evil.cert,
          key: evil.key,
          servername: "localhost",
        });
        s.on("secureConnect", () => s.write("PING\r\n"));
        s.on("data", (d) => resolve(`data: ${String(d)}`));
        s.on("error", (e: Error) => resolve(`error: ${e.message}`));
        s.on("close", () => resolve("closed"));
      });
    });
    // 2.9.10 answers "bad certificate", 2.12 "unknown ca": either way the handshake is refused.
    expect(handshake).toMatch(/^error: .*alert (bad certificate|unknown ca)/);
    // And through the client, with the cli's own nkey: refused too.
    const seed = readFileSync(cli?.nkeyFile ?? "", "utf8").trim();
    const viaClient = connect({
      servers: stack.url,
      authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
      tls: { caFile: cli?.caFile ?? "", certFile, keyFile },
      reconnect: false,
    });
    await expect(viaClient).rejects.toThrow();
  });

  it("mover-a cannot take host b's work, write b's registry key, delete a stream or forge an advisory", async () => {
    const mover = await as("mover-a");
    // Its own durable is fine; b's is refused.
    await deniedPublish(
      mover.nc.request(`$JS.API.CONSUMER.MSG.NEXT.${workStream("b")}.mover`, JSON.stringify({ batch: 1 }), {
        timeout: 5_000,
      }),
      `$JS.API.CONSUMER.MSG.NEXT.${workStream("b")}.mover`,
    );
    await deniedPublish(
      mover.js.publish("$KV.dwcp_movers.b", JSON.stringify({ host: "b", address: "127.0.0.1:1" })),
      "$KV.dwcp_movers.b",
    );
    await deniedPublish(mover.jsm.streams.delete(workStream("b")), `$JS.API.STREAM.DELETE.${workStream("b")}`);
    await deniedPublish(mover.jsm.streams.purge(CMD_STREAM), `$JS.API.STREAM.PURGE.${CMD_STREAM}`);
    const advisory = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${workStream("a")}.mover`;
    await deniedPublish(
      mover.nc.request(advisory, JSON.stringify({ stream: workStream("a"), stream_seq: 1, deliveries: 8 }), {
        timeout: 5_000,
      }),
      advisory,
    );
    // The streams are all still there.
    expect((await stack.nats.jsm.streams.info(workStream("b"))).config.name).toBe(workStream("b"));
  });

  it("the cli cannot hand out work nor call mover RPCs", async () => {
    const cli = await as("cli");
    await deniedPublish(cli.js.publish(subjects.work("a"), "{}"), subjects.work("a"));
    await deniedPublish(
      cli.nc.request(subjects.moverRpc("a"), JSON.stringify({ op: "abort" }), { timeout: 5_000 }),
      subjects.moverRpc("a"),
    );
    await deniedPublish(
      cli.jsm.consumers.delete(CMD_STREAM, "coordinator"),
      `$JS.API.CONSUMER.DELETE.${CMD_STREAM}.coordinator`,
    );
  });

  it("only the cli reads the coordinator's and another host's mover durable (dwcp top's lag)", async () => {
    const cli = await as("cli");
    expect((await cli.jsm.consumers.info(CMD_STREAM, "coordinator")).num_pending).toBe(0);
    expect((await cli.jsm.consumers.info(workStream("b"), "mover")).name).toBe("mover");
    const observer = await as("observer");
    await deniedPublish(
      observer.jsm.consumers.info(CMD_STREAM, "coordinator"),
      `$JS.API.CONSUMER.INFO.${CMD_STREAM}.coordinator`,
    );
    const mover = await as("mover-a");
    await deniedPublish(
      mover.jsm.consumers.info(workStream("b"), "mover"),
      `$JS.API.CONSUMER.INFO.${workStream("b")}.mover`,
    );
  });

  it("the observer cannot publish commands", async () => {
    const observer = await as("observer");
    await deniedPublish(observer.js.publish(subjects.startMigration, "{}"), subjects.startMigration);
    await deniedPublish(observer.js.publish(subjects.cancelMigration, "{}"), subjects.cancelMigration);
    await deniedPublish(observer.js.publish(subjects.setMigrationOptions, "{}"), subjects.setMigrationOptions);
  });

  it("only the coordinator publishes migration summaries; a mover can neither forge nor read them", async () => {
    const summary = subjects.summaryPage(0);
    const mover = await as("mover-a");
    await deniedPublish(mover.js.publish(summary, "{}"), summary);
    // Reading starts with the stream's info, which a mover may not ask for.
    await deniedPublish(readSummaries(mover, INSECURE), `$JS.API.STREAM.INFO.${SUMMARY_STREAM}`);
    await deniedPublish(
      mover.nc.request(`$JS.API.DIRECT.GET.${SUMMARY_STREAM}.${summary}`, "", { timeout: 5_000 }),
      `$JS.API.DIRECT.GET.${SUMMARY_STREAM}.${summary}`,
    );
    const cli = await as("cli");
    await deniedPublish(cli.js.publish(summary, "{}"), summary);
    // The roles that show migrations read them.
    const observer = await as("observer");
    await expect(readSummaries(observer, INSECURE)).resolves.toBeInstanceOf(Map);
  });

  it("only movers publish batch progress; a mover cannot listen to it", async () => {
    const progress = subjects.progress("m1");
    const cli = await as("cli");
    await deniedPublish(cli.js.publish(progress, "{}"), progress);
    const observer = await as("observer");
    await deniedPublish(observer.js.publish(progress, "{}"), progress);
    const mover = await as("mover-b");
    const sub = mover.nc.subscribe(subjects.progressAll);
    expect(messagesOf(await sub.closed)).toContain(
      `Permissions Violation for Subscription to "${subjects.progressAll}"`,
    );
  });

  it("only movers ask a mover about a live migration, and a mover serves only its own host's requests", async () => {
    const live = subjects.moverLive("b");
    const cli = await as("cli");
    await deniedPublish(cli.nc.request(live, JSON.stringify({ op: "liveAbort" }), { timeout: 5_000 }), live);
    const coordinator = await as("coordinator");
    await deniedPublish(coordinator.nc.request(live, JSON.stringify({ op: "liveAbort" }), { timeout: 5_000 }), live);
    const mover = await as("mover-a");
    const sub = mover.nc.subscribe(live);
    expect(messagesOf(await sub.closed)).toContain(`Permissions Violation for Subscription to "${live}"`);
  });

  it("a mover answers only on reply subjects that name its own host", async () => {
    const mover = await as("mover-a");
    // Another host's answers, the coordinator's other inboxes (its PubAcks), its own inbox.
    for (const subject of ["_INBOX_coordinator.rpc.b.forged", "_INBOX_coordinator.forged.1", "_INBOX_mover-b.rpc.b.x"])
      await deniedPublish(mover.nc.request(subject, "{}", { timeout: 5_000 }), subject);
    // The coordinator's request to host a, on a reply subject naming a, is answered.
    const coordinator = await as("coordinator");
    const answer = await requestHost(coordinator.nc, subjects.moverRpc("a"), "a", JSON.stringify({ op: "x" }), {
      timeout: 10_000,
    });
    expect(answer.json<{ reason?: string }>().reason).toBe("PROTOCOL_ERROR");
    // Asked on the coordinator's own request inbox (`_INBOX_coordinator.<nuid>.<token>`), the
    // mover's answer is refused: it holds no allow_responses.
    const plain = coordinator.nc.request(subjects.moverRpc("a"), JSON.stringify({ op: "x" }), { timeout: 2_000 });
    await expect.poll(() => serverLog()).toMatch(/Publish Violation .*Subject "_INBOX_coordinator\.[0-9A-Za-z]{22}\./);
    await expect(plain).rejects.toThrow(/timeout/i);
  });

  it("a replication service answers the cli only on reply subjects that name its own host", async () => {
    const service = await as("replication-a");
    for (const subject of ["_INBOX_cli.rpc.b.forged", "_INBOX_cli.forged.1", "_INBOX_coordinator.rpc.a.x"])
      await deniedPublish(service.nc.request(subject, "{}", { timeout: 5_000 }), subject);
    // A service for host a (this connection, with the role's permissions) answers the cli's ping...
    serveCommands(service.nc, "a", silentLogger, (_cmd, send) => {
      send({ type: "ReplicationPong", version: 1, host: "a", syncing: [] });
      return Promise.resolve();
    });
    await service.nc.flush();
    const cli = await as("cli");
    expect(await pingReplication(cli.nc, "a")).toMatchObject({ type: "ReplicationPong", host: "a" });
    // ...and its answer to a request on the cli's own request inbox is refused.
    const ping = JSON.stringify({ type: "PingReplication", version: 1 });
    const plain = cli.nc.request(replicationRpc("a"), ping, { timeout: 2_000 });
    await expect.poll(() => serverLog()).toMatch(/Publish Violation .*Subject "_INBOX_cli\.[0-9A-Za-z]{22}\./);
    await expect(plain).rejects.toThrow(/timeout/i);
  });

  it("no role can subscribe to another role's inbox", async () => {
    const cli = await as("cli");
    const sub = cli.nc.subscribe("_INBOX_coordinator.>");
    const closed = await sub.closed;
    expect(messagesOf(closed)).toContain('Permissions Violation for Subscription to "_INBOX_coordinator.>"');
    const mover = await as("mover-b");
    const sub2 = mover.nc.subscribe("_INBOX_mover-a.>");
    expect(messagesOf(await sub2.closed)).toContain('Permissions Violation for Subscription to "_INBOX_mover-a.>"');
  });
});
