import { createServer, type Socket } from "node:net";

/**
 * A TCP port on loopback that accepts connections, counts them and never answers: a NATS that
 * hangs. Shows whether a process tried to reach NATS, and how it copes when nothing answers.
 */
export interface SilentNats {
  /** nats://127.0.0.1:PORT */
  url: string;
  /** Connections accepted so far. */
  connections(): number;
  /** Resolves at the next connection accepted after the call. */
  nextConnection(): Promise<void>;
  close(): Promise<void>;
}

export async function startSilentNats(): Promise<SilentNats> {
  const sockets: Socket[] = [];
  const waiting: Array<() => void> = [];
  const server = createServer((s) => {
    sockets.push(s);
    for (const w of waiting.splice(0)) w();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const addr = server.address();
  return {
    url: `nats://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`,
    connections: () => sockets.length,
    nextConnection: () => new Promise<void>((r) => waiting.push(r)),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
