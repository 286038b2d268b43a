import { describe, expect, it } from "vitest";
import { permissionsOf } from "./permissions.js";
import { permissionsBlock, serverConfig } from "./server-config.js";

const U = (c: string): string => `U${c.repeat(55)}`;

describe("serverConfig", () => {
  const text = serverConfig({
    host: "127.0.0.1",
    port: 4333,
    storeDir: "/var/lib/dwcp/nats",
    tls: { certFile: "/p/server.pem", keyFile: "/p/server.key", caFile: "/p/ca.pem" },
    users: [
      { role: "admin", publicKey: U("A") },
      { role: "mover-a", publicKey: U("B") },
      { role: "replication-a", publicKey: U("C") },
    ],
  });

  it("requires client certificates from the CA and has no anonymous user", () => {
    const tls = ["tls {", '  cert_file: "/p/server.pem"', '  key_file: "/p/server.key"', '  ca_file: "/p/ca.pem"'];
    expect(text).toContain([...tls, "  verify: true"].join("\n"));
    expect(text).not.toMatch(/no_auth_user/);
    expect(text).toContain('listen: "127.0.0.1:4333"');
    expect(text).toContain('store_dir: "/var/lib/dwcp/nats"');
  });

  it("makes each role an nkey user with its permissions, subjects quoted so `$` is literal", () => {
    expect(text).toContain(`nkey: "${U("A")}"`);
    expect(text).toContain(`nkey: "${U("B")}"`);
    expect(text).toContain('"$KV.dwcp_movers.a"');
    // Services answer on reply subjects that name their host; no user holds allow_responses.
    expect(text).toContain('"_INBOX_coordinator.rpc.a.>"');
    expect(text).toContain('"_INBOX_cli.rpc.a.>"');
    expect(text).not.toMatch(/allow_responses/);
    expect(text).not.toMatch(/[^"]\$JS\.API/);
  });

  it("renders a permission set as nats-server takes it", () => {
    const block = permissionsBlock(permissionsOf("observer"));
    expect(block.split("\n")[0]).toBe("permissions: {");
    expect(block).toContain('subscribe: { allow: ["_INBOX_observer.>", "dwcp.progress.>"], deny: [] }');
  });
});
