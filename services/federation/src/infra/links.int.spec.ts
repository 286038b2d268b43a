import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DomainUnreachableError, leafnodeLines } from "./links.js";

describe("a domain that does not answer", () => {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-links-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is reported with the servers' leafnode log lines, the last of each log", () => {
    const hub = join(dir, "hub.log");
    const site = join(dir, "east.log");
    writeFileSync(
      hub,
      [
        "[1] [INF] Server is ready",
        ...Array.from({ length: 10 }, (_, i) => `[1] [INF] 127.0.0.1:${i} - lid:${i} - Leafnode connection created`),
      ].join("\n"),
    );
    const loop = '[2] [ERR] lid:4 - Loop detected for leafnode account="$G". Delaying attempt to reconnect for 30s';
    writeFileSync(site, `${loop}\n[2] [INF] ready\n`);
    const lines = leafnodeLines([hub, site, join(dir, "missing.log")]).split("\n");
    expect(lines).toEqual([
      `${hub}:`,
      ...Array.from(
        { length: 8 },
        (_, i) => `[1] [INF] 127.0.0.1:${i + 2} - lid:${i + 2} - Leafnode connection created`,
      ),
      `${site}:`,
      loop,
    ]);
    const err = new DomainUnreachableError("nats://127.0.0.1:1", "east", 45_000, leafnodeLines([site]));
    expect(err.message).toMatch(
      /did not answer within 45000 ms; the servers' leafnode log lines:\n.*east.log:\n.*Loop detected/,
    );
    expect(new DomainUnreachableError("nats://127.0.0.1:1", "east", 1).message).toMatch(/check the leafnode link/);
  });
});
