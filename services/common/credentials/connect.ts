import type { NatsCredentials } from "../nats.js";
import { roleEnv, type Provisioned, type Role } from "./provision.js";

/** What a connection as `role` of a provisioned deployment presents to its nats-server. */
export function natsCredentialsOf(p: Provisioned, role: Role): NatsCredentials {
  const e = roleEnv(p, role);
  return {
    role,
    nkeyFile: e["DWCP_NKEY_FILE"] ?? "",
    caFile: e["DWCP_TLS_CA"] ?? "",
    certFile: e["DWCP_TLS_CERT"] ?? "",
    keyFile: e["DWCP_TLS_KEY"] ?? "",
  };
}
