import { connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { TcpRelay } from "./relay.js";

const MiB = 1024 * 1024;
let server: Server | undefined;
let relay: TcpRelay | undefined;
afterEach(async () => {
  await relay?.close();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = relay = undefined;
});

/** A target that reads slowly, counts what it got until the client's end, then answers and ends. */
async function slowTarget(): Promise<{ port: number; received: Promise<number> }> {
  let resolve!: (n: number) => void;
  const received = new Promise<number>((r) => (resolve = r));
  server = createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on("data", (d: Buffer) => {
      n += d.length;
      s.pause();
      setTimeout(() => s.resume(), 2);
    });
    s.on("end", () => {
      resolve(n);
      s.end(`got ${n}`);
    });
  });
  await new Promise<void>((r) => server?.listen(0, "127.0.0.1", () => r()));
  const addr = server.address();
  return { port: typeof addr === "object" && addr !== null ? addr.port : 0, received };
}

describe("TcpRelay", () => {
  it("passes a half-close on after what a delaying forward still holds: the stream arrives whole", async () => {
    const target = await slowTarget();
    // A forward that holds every chunk for a moment (as a fault injector's latency does) and
    // passes each direction's end on once it has delivered the rest.
    const delayed = (from: Socket, to: Socket): void => {
      let pending = Promise.resolve();
      from.on("data", (d: Buffer) => {
        pending = pending.then(() => new Promise<void>((r) => setTimeout(() => (to.write(d), r()), 1)));
      });
      from.on("end", () => void pending.then(() => to.end()));
    };
    relay = await TcpRelay.start({
      target: { host: "127.0.0.1", port: target.port },
      forward: ({ client, upstream }) => {
        delayed(client, upstream);
        delayed(upstream, client);
      },
    });
    const sent = 8 * MiB;
    const answer = await new Promise<string>((resolve, reject) => {
      const c = connect({ host: "127.0.0.1", port: relay?.port ?? 0, allowHalfOpen: true }, () => {
        c.end(Buffer.alloc(sent, 7));
      });
      let text = "";
      c.on("data", (d: Buffer) => (text += d.toString()));
      c.on("end", () => resolve(text));
      c.on("error", reject);
    });
    expect(await target.received).toBe(sent);
    expect(answer).toBe(`got ${sent}`);
  });
});
