import { join } from "node:path";
import {
  provision,
  roleEnv,
  type Provisioned,
  type ProvisionOptions,
  type Role,
} from "#common/credentials/provision.js";
import { deploymentServerConfig } from "#common/credentials/server-config.js";
import { natsCredentialsOf } from "#common/credentials/connect.js";
import { connectNats, type Nats, type NatsCredentials } from "#common/nats.js";
import { freePort, startNatsServer, type NatsServerHandle } from "#common/nats-server.js";

/** A private nats-server as `dwcp up` runs it: nkey users with their permissions, mutual TLS. */
export interface SecureNats {
  server: NatsServerHandle;
  credentials: Provisioned;
  /** What a connection as `role` presents. */
  credentialsOf(role: Role): NatsCredentials;
  /** A process's environment as `role` (DWCP_NKEY_FILE, DWCP_TLS_*, DWCP_TRUST_FILE). */
  env(role: Role): Record<string, string>;
  /** A new connection as `role`; the caller closes it. */
  connect(role: Role, name?: string): Promise<Nats>;
}

/** Provisions credentials in `dir` and starts a secured nats-server with JetStream in `dir`/nats. */
export async function startSecureNats(
  dir: string,
  opts: ProvisionOptions = { hosts: ["a", "b"] },
): Promise<SecureNats> {
  const credentials = await provision(dir, opts);
  const port = await freePort();
  const server = await startNatsServer({
    configFile: join(dir, "nats-server.conf"),
    config: deploymentServerConfig(credentials, { host: "127.0.0.1", port, storeDir: join(dir, "nats") }),
    port,
    logFile: join(dir, "nats-server.log"),
  });
  const credentialsOf = (role: Role): NatsCredentials => natsCredentialsOf(credentials, role);
  return {
    server,
    credentials,
    credentialsOf,
    env: (role) => roleEnv(credentials, role),
    connect: (role, name = `test-${role}`) =>
      connectNats(server.url, name, undefined, { credentials: credentialsOf(role), waitOnFirstConnect: false }),
  };
}
