import { describe, expect, it } from "vitest";
import { clientRoleOf, findCredentials, takeCredentialFlags } from "./client.js";
import { UsageError } from "./args.js";

describe("the CLI's credentials", () => {
  it("takes the credential flags out of a command's arguments", () => {
    const t = takeCredentialFlags(
      ["--vm", "v", "--creds", "/c.nk", "--tls-ca=/ca.pem", "--tls-cert", "/c.pem", "--tls-key", "/c.key"],
      false,
    );
    expect(t.argv).toEqual(["--vm", "v"]);
    expect(t.flags).toEqual({ creds: "/c.nk", tlsCa: "/ca.pem", tlsCert: "/c.pem", tlsKey: "/c.key" });
    expect(takeCredentialFlags(["--data-dir", "/d", "--vm", "v"], false).argv).toEqual(["--vm", "v"]);
    expect(takeCredentialFlags(["--data-dir", "/d", "--vm", "v"], true).argv).toEqual([
      "--data-dir",
      "/d",
      "--vm",
      "v",
    ]);
    expect(() => takeCredentialFlags(["--creds"], false)).toThrow(UsageError);
  });

  it("wants all four files when given by flag, else none is found in an empty data dir", () => {
    expect(() => findCredentials({ creds: "/c.nk" }, "cli", {})).toThrow(/go together: pass all four/);
    expect(findCredentials({ dataDir: "/nonexistent-dwcp" }, "cli", {})).toBeUndefined();
  });

  it("runs each client command as its role", () => {
    expect(clientRoleOf("migrate")).toBe("cli");
    expect(clientRoleOf("init")).toBe("admin");
    expect(clientRoleOf("backup")).toBe("admin");
    expect(clientRoleOf("coordinator")).toBeUndefined();
    expect(clientRoleOf("toString")).toBeUndefined();
  });
});
