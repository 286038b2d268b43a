import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, type TLSSocket } from "node:tls";
import { afterAll, describe, expect, it } from "vitest";
import { identitiesOf } from "../pki.js";
import { provision, readTrustFile, roleEnv } from "./provision.js";

const dir = mkdtempSync(join(tmpdir(), "dwcp-pki-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("provision", () => {
  it("issues a CA, per-role certificates and nkeys, secrets 0600, and keeps them on a second run", async () => {
    const p = await provision(dir, { hosts: ["a", "b"], sites: ["west"] });
    expect([...p.roles.keys()].sort()).toEqual(
      [
        "admin",
        "cli",
        "coordinator",
        "mover-a",
        "mover-b",
        "observer",
        "replication-a",
        "replication-b",
        "site-west",
      ].sort(),
    );
    const ca = new X509Certificate(readFileSync(p.caFile));
    const moverA = p.roles.get("mover-a")!;
    const cert = new X509Certificate(readFileSync(moverA.certFile));
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(identitiesOf(readFileSync(moverA.certFile))).toEqual(["dwcp:role:mover-a", "dwcp:host:a"]);
    for (const f of [moverA.keyFile, moverA.nkeyFile, join(dir, "pki", "ca.key")]) {
      expect(statSync(f).mode & 0o777).toBe(0o600);
    }
    const trust = readTrustFile(p.trustFile);
    expect(trust.principals[moverA.publicKey]).toEqual({ role: "mover-a", host: "a" });
    // A site's own identity is that site's principal (a federation site's log is signed by it).
    expect(trust.principals[p.roles.get("site-west")!.publicKey]).toEqual({ role: "site-west", site: "west" });
    expect(roleEnv(p, "mover-a")).toMatchObject({ DWCP_NKEY_FILE: moverA.nkeyFile, DWCP_TLS_CA: p.caFile });

    const again = await provision(dir, { hosts: ["a", "b"], sites: ["west"] });
    expect(again.roles.get("mover-a")!.publicKey).toBe(moverA.publicKey);
    expect(readFileSync(again.roles.get("mover-a")!.certFile, "utf8")).toBe(readFileSync(moverA.certFile, "utf8"));
  });

  it("names server addresses in the nats-server certificate: IP addresses as IP SANs, names as DNS SANs", async () => {
    const own = mkdtempSync(join(tmpdir(), "dwcp-pki-names-"));
    try {
      const p = await provision(own, { hosts: [], serverNames: ["10.1.0.11", "nats-1a.example"] });
      const cert = new X509Certificate(readFileSync(p.server.certFile));
      expect(cert.checkIP("10.1.0.11")).toBe("10.1.0.11");
      expect(cert.checkHost("nats-1a.example")).toBe("nats-1a.example");
      expect(cert.checkIP("10.1.0.12")).toBeUndefined();
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  it("its certificates carry a mutually authenticated TLS 1.3 connection; a stranger's is refused", async () => {
    const p = await provision(dir, { hosts: ["a", "b"] });
    const pem = (f: string): Buffer => readFileSync(f);
    const a = p.roles.get("mover-a")!;
    const b = p.roles.get("mover-b")!;
    const server = createServer({
      ca: pem(p.caFile),
      cert: pem(b.certFile),
      key: pem(b.keyFile),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
    });
    const peers: string[][] = [];
    const accepted = new Promise<void>((resolve) =>
      server.on("secureConnection", (s: TLSSocket) => {
        peers.push(identitiesOf(s.getPeerX509Certificate()!.raw));
        s.end("ok");
        resolve();
      }),
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const port = (server.address() as { port: number }).port;
    try {
      const client = connect({
        host: "127.0.0.1",
        port,
        ca: pem(p.caFile),
        cert: pem(a.certFile),
        key: pem(a.keyFile),
        servername: "localhost",
      });
      await once(client, "secureConnect");
      expect(client.getProtocol()).toBe("TLSv1.3");
      expect(identitiesOf(client.getPeerX509Certificate()!.raw)).toContain("dwcp:host:b");
      await accepted; // in TLS 1.3 the client may finish its handshake before the server does
      client.destroy();
      expect(peers[0]).toContain("dwcp:host:a");

      const other = await provision(join(dir, "other"), { hosts: ["a"] });
      const o = other.roles.get("mover-a")!;
      const stranger = connect({
        host: "127.0.0.1",
        port,
        ca: pem(p.caFile),
        cert: pem(o.certFile),
        key: pem(o.keyFile),
        servername: "localhost",
      });
      const outcome = await new Promise<string>((resolve) => {
        stranger.on("data", () => resolve("data"));
        stranger.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        stranger.on("close", () => resolve("closed"));
      });
      expect(outcome).not.toBe("data");
      expect(peers).toHaveLength(1);
    } finally {
      server.close();
    }
  });
});
