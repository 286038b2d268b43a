// An attacker against a federation (two sites, a hub, leafnode links): every server refuses an
// anonymous client; the hub refuses a leafnode without a site's certificate; a site's roles reach
// nothing of another site but what federation needs; and an event forged into one site's log is
// not believed at the other site, which reads it through a mirror.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { createUser } from "@nats-io/nkeys";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forgedHistory } from "../support/forged-history.js";
import { natsCredentialsOf } from "#common/credentials/connect.js";
import { provisionFederation, type FederationCredentials } from "#common/credentials/federation.js";
import { EventStore } from "#common/event-store.js";
import { CMD_STREAM, EVT_STREAM, subjects } from "#common/layout.js";
import { connectNats, NatsConnectError, type Nats } from "#common/nats.js";
import { freePort, startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { createCertificateAuthority, issueCertificate } from "#common/pki.js";
import { EventSigner, EventVerifier } from "#common/signing.js";
import { startFederation, type FederationHandle } from "../../services/federation/src/app/federation.js";
import { readMirroredMigration } from "../../services/federation/src/infra/migration-mirrors.js";
import { foldStored } from "../../cli/client.js";

/** The messages of an error and its causes. */
function messagesOf(err: unknown): string {
  const out: string[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause) out.push(`${e.name}: ${e.message}`);
  return out.join(" <- ");
}

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

/** Resolves with the first line of `file` matching `re`, polling the file (a server's log). */
async function logLine(file: string, re: RegExp, timeoutMs = 30_000, from = 0): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = "";
    try {
      text = readFileSync(file, "utf8").slice(from);
    } catch {
      /* not yet written */
    }
    const line = text.split("\n").find((l) => re.test(l));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no line matching ${re} in ${file}:\n${text.slice(-2_000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("a federation's links and servers", () => {
  let dir: string;
  let creds: FederationCredentials;
  let fed: FederationHandle;
  const open: Nats[] = [];
  const rogues: NatsServerHandle[] = [];
  const clients: NatsConnection[] = [];
  const as = async (site: string, role: Parameters<FederationHandle["connect"]>[1]): Promise<Nats> => {
    const n = await fed.connect(site, role, `attacker-${site}-${role}`);
    open.push(n);
    return n;
  };
  const hubLeafPort = (): number => {
    const conf = readFileSync(join(dir, "fed", "hub", "server.conf"), "utf8");
    return Number(/"listen": "127\.0\.0\.1:(\d+)"/.exec(conf)?.[1]);
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "dwcp-fed-attacker-"));
    creds = await provisionFederation(join(dir, "credentials"), { east: ["e1"], west: ["w1"] });
    fed = await startFederation(
      { sites: ["east", "west"], dataDir: join(dir, "fed"), healthIntervalMs: 0, migrations: true },
      { credentials: creds, log: pino({ level: "silent" }) },
    );
  });
  afterAll(async () => {
    await Promise.all(open.map((n) => n.nc.close()));
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(rogues.map((r) => r.stop()));
    await fed?.stop();
    if (!process.env["DWCP_KEEP_TEST_DATA"]) rmSync(dir, { recursive: true, force: true });
  });

  it("every site server and the hub refuse an anonymous client; the hub takes no client at all", async () => {
    for (const s of fed.sites) {
      const anon = connectNats(s.url, "anonymous", undefined, { waitOnFirstConnect: false });
      await expect(anon).rejects.toBeInstanceOf(NatsConnectError);
      // No CA, no certificate: the server wants TLS, and the client cannot even verify it.
      const plain = await failure(connect({ servers: s.url, reconnect: false, timeout: 5_000 }));
      expect(messagesOf(plain)).toMatch(/certificate|TLS|Authorization/);
    }
    const hub = fed.hub!;
    await expect(connectNats(hub.url, "anonymous", undefined, { waitOnFirstConnect: false })).rejects.toBeInstanceOf(
      NatsConnectError,
    );
    // A valid role's key and certificate of the federation's CA are no use at the hub either.
    const admin = natsCredentialsOf(creds.sites.get("east")!, "admin");
    const err = await failure(
      connectNats(hub.url, "east-admin-at-hub", undefined, { credentials: admin, waitOnFirstConnect: false }),
    );
    expect(messagesOf(err)).toMatch(/Authorization Violation/i);
    // Nor is a site's leafnode identity used as a client (only a leafnode may be that user).
    const leafAsClient = await failure(
      connect({
        servers: hub.url,
        reconnect: false,
        timeout: 5_000,
        user: "CN=site-east",
        tls: { caFile: creds.caFile, certFile: admin.certFile, keyFile: admin.keyFile },
      }),
    );
    expect(messagesOf(leafAsClient)).toMatch(/Authorization Violation/i);
  });

  it("a site's role credentials are no user at another site's server", async () => {
    const eastMover = natsCredentialsOf(creds.sites.get("east")!, "mover-e1");
    const west = fed.sites.find((s) => s.id === "west")!;
    const err = await failure(
      connectNats(west.url, "east-mover-at-west", undefined, { credentials: eastMover, waitOnFirstConnect: false }),
    );
    expect(messagesOf(err)).toMatch(/Authorization Violation/i);
  });

  it("the hub refuses a leafnode without a site's certificate: none, another CA's, a role's of the CA", async () => {
    const port = hubLeafPort();
    const hubLog = join(dir, "fed", "hub", "server.log");
    const other = await createCertificateAuthority("not the federation's CA");
    const stranger = await issueCertificate(other, { commonName: "site-east", ipAddresses: ["127.0.0.1"] });
    writeFileSync(join(dir, "stranger.pem"), stranger.cert);
    writeFileSync(join(dir, "stranger.key"), stranger.key, { mode: 0o600 });
    const mover = creds.sites.get("east")!.roles.get("mover-e1")!;
    const site = creds.sites.get("east")!.roles.get("site-east")!;
    /** A server of the attacker's dialling the hub's leafnode port with `tls`; a client on it. */
    const rogue = async (name: string, tls: Record<string, unknown>): Promise<NatsConnection> => {
      const d = join(dir, `rogue-${name}`);
      mkdirSync(d, { recursive: true });
      const listen = await freePort();
      const config = {
        server_name: `rogue-${name}`,
        listen: `127.0.0.1:${listen}`,
        leafnodes: { reconnect: 1, remotes: [{ url: `nats-leaf://127.0.0.1:${port}`, tls: { ...tls, timeout: 5 } }] },
      };
      const server = await startNatsServer({
        name: `rogue ${name}`,
        port: listen,
        config: JSON.stringify(config),
        configFile: join(d, "server.conf"),
        logFile: join(d, "server.log"),
      });
      rogues.push(server);
      const nc = await connect({ servers: server.url, name: "attacker" });
      clients.push(nc);
      return nc;
    };
    const cases: Array<{ name: string; tls: Record<string, unknown>; refusal: RegExp }> = [
      { name: "no-certificate", tls: { ca_file: creds.caFile }, refusal: /TLS leafnode handshake error.*certificate/ },
      {
        name: "another-ca",
        tls: { cert_file: join(dir, "stranger.pem"), key_file: join(dir, "stranger.key"), ca_file: creds.caFile },
        refusal: /TLS leafnode handshake error.*(certificate|authority)/,
      },
      {
        name: "mover-certificate",
        tls: { cert_file: mover.certFile, key_file: mover.keyFile, ca_file: creds.caFile },
        refusal: /authentication error|Authorization Violation/,
      },
    ];
    for (const c of cases) {
      const from = readFileSync(hubLog, "utf8").length;
      const n = await rogue(c.name, c.tls);
      // The hub refused it (the signal); so nothing crosses from the rogue to a site.
      await logLine(hubLog, c.refusal, 30_000, from);
      const err = await failure(n.request("$JS.west.API.INFO", "", { timeout: 2_000 }));
      expect(err, c.name).toBeDefined();
    }
    // The control: with east's site certificate the same rogue is let in and reaches west, so the
    // refusals above are about the certificate (and this test would notice an open door).
    const n = await rogue("control", { cert_file: site.certFile, key_file: site.keyFile, ca_file: creds.caFile });
    await expect
      .poll(
        () =>
          n.request("$JS.west.API.INFO", "", { timeout: 2_000 }).then(
            () => true,
            () => false,
          ),
        {
          timeout: 30_000,
        },
      )
      .toBe(true);
  });

  it("a site's mover reaches nothing of another; even its admin cannot alter another site's streams", async () => {
    const mover = await as("east", "mover-e1");
    // Not through its own server's JetStream API for the other domain.
    for (const subject of ["$JS.west.API.STREAM.PURGE.DWCP_EVT", "$JS.west.API.STREAM.INFO.DWCP_CMD"]) {
      const err = await failure(mover.nc.request(subject, "{}", { timeout: 5_000 }));
      expect(messagesOf(err), subject).toContain(`Permissions Violation for Publish to "${subject}"`);
    }
    // A transfer fact it may publish at its own site is stored there, and never at the other site:
    // the link carries no dwcp.evt (ask west afterwards over the same link: it answers in order).
    const westAdmin = await as("west", "admin");
    const westEvt = (await westAdmin.jsm.streams.info(EVT_STREAM)).state.messages;
    await mover.js.publish(subjects.migration("moved-by-e1"), "{}");
    const eastAdmin = await as("east", "admin");
    const westInfo = await eastAdmin.nc.request(`$JS.west.API.STREAM.INFO.${EVT_STREAM}`, "", { timeout: 5_000 });
    expect(westInfo.json<{ state: { messages: number } }>().state.messages).toBe(westEvt);
    // Nor a command: the other site's coordinator never sees it (the barrier: an allowed request
    // over the same link, answered after anything published before it).
    await eastAdmin.js.publish("dwcp.cmd.migration.start", "{}");
    await eastAdmin.nc.request(`$JS.west.API.STREAM.INFO.${EVT_STREAM}`, "", { timeout: 5_000 });
    expect((await westAdmin.jsm.streams.info(CMD_STREAM)).state.messages).toBe(0);
    // Reading a stream no site mirrors does not cross the link either.
    const cmdInfo = await failure(
      eastAdmin.nc.request(`$JS.west.API.STREAM.INFO.${CMD_STREAM}`, "", { timeout: 3_000 }),
    );
    expect(cmdInfo).toBeDefined();
    // East's admin holds `>` at east, and still cannot delete or purge west's streams: the hub lets
    // only reads and the mirrors' consumer creates cross a link.
    for (const subject of [`$JS.west.API.STREAM.DELETE.${EVT_STREAM}`, `$JS.west.API.STREAM.PURGE.${CMD_STREAM}`]) {
      const err = await failure(eastAdmin.nc.request(subject, "{}", { timeout: 3_000 }));
      expect(err, subject).toBeDefined();
    }
    await expect(westAdmin.jsm.streams.info(EVT_STREAM)).resolves.toBeDefined();
  });

  it("a history forged into one site's log is not believed at the other site, reading it in its mirror", async () => {
    const eastAdmin = await as("east", "admin");
    const stranger = new EventSigner(createUser());
    const forger = new EventStore(eastAdmin.js, eastAdmin.jsm, { trust: { insecure: false, signer: stranger } });
    await forger.append("forged-x", forgedHistory("forged-x", "e1", "w1"), "forged-x.h");
    const west = await as("west", "cli");
    const trust = { insecure: false, verifier: EventVerifier.fromTrustFile(creds.trustFile) };
    let mirrored: Awaited<ReturnType<typeof readMirroredMigration>>;
    await expect
      .poll(async () => (mirrored = await readMirroredMigration(west.js, west.jsm, "forged-x", trust))?.events.length, {
        timeout: 15_000,
      })
      .toBe(2);
    expect(mirrored!.site).toBe("east");
    expect(mirrored!.events.map((e) => e.provenance)).toEqual([
      { kind: "unverified", reason: "unknown signer" },
      { kind: "unverified", reason: "unknown signer" },
    ]);
    const state = foldStored("forged-x", mirrored!.events);
    expect(state.status).not.toBe("completed");
    expect(state.ignored?.count).toBe(2);
  });
});
