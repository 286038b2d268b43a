import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { coalesceWrites, connectNats, type Nats } from "./nats.js";
import { startNatsServer, type NatsServerHandle } from "./nats-server.js";

// A connection writes once per event-loop turn (coalesceWrites): nothing published is held back
// by it, neither what a burst of awaits produces nor what is published just before a close.
let dir: string;
let server: NatsServerHandle;
let reader: Nats;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-nats-writes-"));
  server = await startNatsServer({ storeDir: join(dir, "nats") });
  reader = await connectNats(server.url, "writes-reader");
});

afterAll(async () => {
  await reader?.nc.close().catch(() => undefined);
  if (server) await server.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

it("delivers a burst of messages from separate await chains, and requests answered in it", async () => {
  const seen: string[] = [];
  const sub = reader.nc.subscribe("w.burst.>", { callback: (_e, m) => void seen.push(m.subject) });
  const echo = reader.nc.subscribe("w.echo", { callback: (_e, m) => void m.respond(m.data) });
  await reader.nc.flush();
  const writer = await connectNats(server.url, "writes-writer");
  try {
    const n = 500;
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        await Promise.resolve();
        writer.nc.publish(`w.burst.${i}`, "x");
        const r = await writer.nc.request("w.echo", String(i), { timeout: 10_000 });
        expect(r.string()).toBe(String(i));
      }),
    );
    await writer.nc.flush();
    await reader.nc.flush();
    expect(seen).toHaveLength(n);
  } finally {
    sub.unsubscribe();
    echo.unsubscribe();
    await writer.nc.close();
  }
});

it("writes what was published just before close", async () => {
  const got = new Promise<string>((resolve) => {
    reader.nc.subscribe("w.last", { max: 1, callback: (_e, m) => resolve(m.string()) });
  });
  await reader.nc.flush();
  const writer = await connectNats(server.url, "writes-closer");
  writer.nc.publish("w.last", "bye");
  await writer.nc.close();
  expect(await got).toBe("bye");
});

it("leaves a connection without the client internals it needs alone", () => {
  const fake = { close: () => Promise.resolve() } as unknown as Parameters<typeof coalesceWrites>[0];
  expect(coalesceWrites(fake)).toBe(false);
});
