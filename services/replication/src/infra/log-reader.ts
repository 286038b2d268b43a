import { DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import type { Nats } from "#common/nats.js";
import { ORIG_SEQ_HEADER, ORIG_TIME_HEADER } from "../domain/backup/format.js";

/** Position of a stored message in the stream it was first written to (survives restore-log). */
export interface Origin {
  seq: number;
  timeMs: number;
}

/**
 * The sequence and time a message had in its original stream: the `Dwcp-Orig-*` headers that
 * restore-log adds, else the stream's own.
 */
export function originOf(m: JsMsg): Origin {
  const h = m.headers;
  const seq = Number(h?.get(ORIG_SEQ_HEADER) || m.seq);
  const t = h?.get(ORIG_TIME_HEADER);
  const timeMs = t ? Number(BigInt(t) / 1_000_000n) : Number(m.timestampNanos / 1_000_000n);
  return { seq, timeMs };
}

/**
 * Reads a stream from its first message to the last one that existed when the read began, with
 * an ordered consumer: ephemeral, flow-controlled, and invisible to durable consumers, so live
 * services are not disturbed. `onMsg` returning false stops early.
 */
export async function readStream(
  nats: Nats,
  stream: string,
  onMsg: (m: JsMsg) => boolean | void,
  opts: { filter?: string; endSeq?: number } = {},
): Promise<{ lastSeq: number; read: number }> {
  const info = await nats.jsm.streams.info(stream);
  const end = Math.min(opts.endSeq ?? Infinity, info.state.last_seq);
  if (info.state.messages === 0 || end < info.state.first_seq) return { lastSeq: end, read: 0 };
  const consumer = await nats.js.consumers.get(stream, {
    deliver_policy: DeliverPolicy.All,
    ...(opts.filter ? { filter_subjects: opts.filter } : {}),
  });
  const iter = await consumer.consume({ max_messages: 2048 });
  let read = 0;
  try {
    for await (const m of iter) {
      read++;
      if (onMsg(m) === false || m.seq >= end || m.info.pending === 0) break;
    }
  } finally {
    iter.stop();
  }
  return { lastSeq: end, read };
}
