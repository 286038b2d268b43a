// A sending mover's data channel in a process of its own, for tests that kill the sender:
// `node --import tsx batch-sender-process.ts <json>` with the JSON fields of SendBatchOptions
// (secretHex for the secret); prints {"acked": offset} per acknowledged chunk and {"done": n}.
import { sendBatch, type SendBatchOptions } from "../../services/mover/src/infra/data-channel/client.js";
import { silentLog } from "./data-channel.js";

const o = JSON.parse(process.argv[2] ?? "{}") as Omit<SendBatchOptions, "secret" | "log"> & { secretHex: string };
const r = await sendBatch({
  ...o,
  secret: Buffer.from(o.secretHex, "hex"),
  log: silentLog,
  onChunk: (c) => process.stdout.write(`${JSON.stringify({ acked: c.offset })}\n`),
});
process.stdout.write(`${JSON.stringify({ done: r.chunks.length })}\n`);
