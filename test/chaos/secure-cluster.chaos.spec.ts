import { readFileSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect } from "vitest";
import { moverRole } from "#common/credentials/provision.js";
import { Chaos } from "./support/harness.js";
import { scenario } from "./support/scenario.js";
import { rng, runSeed } from "./support/seed.js";

// The cluster every other chaos scenario runs on is secured as `dwcp up` secures its server: this
// shows that it is, so their results hold for a secured deployment. Client connections need a
// certificate of the deployment's CA and a role's nkey; routes run over verified TLS and only the
// nats-server certificate may open one.
const F = import.meta.filename;
let c: Chaos;

beforeAll(async () => {
  c = await Chaos.start("secure", rng(runSeed()));
});
afterAll(async () => c?.stop());

/** Everything the peer sends until it closes the connection or `ms` pass. */
function readUntilClose(s: Socket, ms: number): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = "";
    const timer = setTimeout(() => resolve({ text, closed: false }), ms);
    s.on("data", (d: Buffer) => (text += d.toString("utf8")));
    s.on("error", () => undefined);
    s.once("close", () => (clearTimeout(timer), resolve({ text, closed: true })));
  });
}

const ROUTE_CONNECT =
  'CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"name":"intruder","cluster":"dwcp-chaos"}\r\nPING\r\n';

describe("the chaos cluster is secured", () => {
  scenario(F, "clients: a role's nkey over verified TLS is taken, anything less is refused", async ({ figures }) => {
    const creds = c.as(moverRole("a"));
    // A certificate of the CA but no nkey: the server's authorization refuses it.
    const noNkey = await connect({
      servers: c.cluster.url(0),
      timeout: 5_000,
      reconnect: false,
      tls: { caFile: creds.caFile, certFile: creds.certFile, keyFile: creds.keyFile },
    }).then(
      async (nc) => (await nc.close(), undefined),
      (err: unknown) => err,
    );
    expect(String(noNkey), "a client without an nkey is refused").toMatch(/authorization violation/i);
    // No client certificate: the TLS handshake is refused, nothing of NATS is reached.
    const noCert = await connect({
      servers: c.cluster.url(0),
      timeout: 5_000,
      reconnect: false,
      tls: { caFile: creds.caFile },
    }).then(
      async (nc) => (await nc.close(), undefined),
      (err: unknown) => err,
    );
    expect(noCert, "a client without a certificate is refused").toBeInstanceOf(Error);
    // Every node requires and verifies TLS on client and route links.
    for (const [i] of c.cluster.nodes.entries()) {
      const varz = await c.cluster.monitor<{
        auth_required?: boolean;
        tls_required?: boolean;
        tls_verify?: boolean;
        cluster?: { tls_required?: boolean; tls_verify?: boolean };
      }>(i, "varz");
      expect(
        [varz.auth_required, varz.tls_required, varz.tls_verify, varz.cluster?.tls_required, varz.cluster?.tls_verify],
        `n${i} requires auth and verified TLS on clients and routes`,
      ).toEqual([true, true, true, true, true]);
      // From 2.10 a peer is reached over a pool of routes, so the peers are counted.
      const routez = await c.cluster.monitor<{ routes?: Array<{ remote_id?: string }> }>(i, "routez");
      const peers = new Set((routez.routes ?? []).map((r) => r.remote_id));
      expect(peers.size, `n${i} has routes to its two peers, over TLS`).toBe(2);
    }
    Object.assign(figures, { noNkey: String(noNkey), noCert: String(noCert) });
  });

  scenario(F, "routes: a role's certificate or plaintext cannot open one", async ({ figures }) => {
    const port = c.cluster.nodes[0]?.clusterPort ?? 0;
    const role = c.credentials.roles.get(moverRole("a"));
    if (role === undefined) throw new Error("no mover-a credentials");
    // A mover's certificate is of the same CA, but a route carries every account's traffic.
    const sock = netConnect(port, "127.0.0.1");
    const tls = tlsConnect({
      socket: sock,
      ca: readFileSync(c.credentials.caFile),
      cert: readFileSync(role.certFile),
      key: readFileSync(role.keyFile),
    });
    await new Promise<void>((resolve, reject) => {
      tls.once("secureConnect", resolve);
      tls.once("error", reject);
    });
    const asMover = readUntilClose(tls, 10_000);
    tls.write(ROUTE_CONNECT);
    const refused = await asMover;
    expect(refused.text, "the route is refused").toMatch(/-ERR 'Authorization Violation'/);
    expect(refused.closed, "and closed").toBe(true);
    // Plaintext: the node expects a TLS handshake and drops the connection.
    const plain = netConnect(port, "127.0.0.1");
    const asPlain = readUntilClose(plain, 10_000);
    plain.write(ROUTE_CONNECT);
    const dropped = await asPlain;
    expect(dropped.closed, "a plaintext route is dropped").toBe(true);
    expect(dropped.text, "without a PONG").not.toMatch(/PONG/);
    Object.assign(figures, { roleCert: refused.text.split("\r\n").find((l) => l.startsWith("-ERR")) ?? "" });
  });
});
