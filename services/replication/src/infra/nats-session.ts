import { connectNats, type Nats } from "#common/nats.js";

/** Runs `use` on a NATS connection of its own (named `name`), closed afterwards however it ends. */
export async function withNats<T>(natsUrl: string, name: string, use: (nats: Nats) => Promise<T>): Promise<T> {
  const nats = await connectNats(natsUrl, name);
  try {
    return await use(nats);
  } finally {
    await nats.nc.close();
  }
}
