import type { AgentReply, AgentRequest } from "#schemas/replication.js";

// Source-to-destination protocol: one request frame, one reply frame. A frame is
// [u8 1=request|2=reply][u32 BE header length][JSON header][payload]. Bytes are counted as they are framed,
// so "wire bytes" are what a socket would carry.

export type { Codec, PutChunk, PutOutcome } from "#schemas/replication.js";
export type Request = AgentRequest;
export type Reply = AgentReply;

const REQUEST_KINDS = new Set(["open", "have", "put", "commit"]);

export function encodeFrame(header: Request | Reply, payload?: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const out = Buffer.allocUnsafe(5 + json.length + (payload?.length ?? 0));
  // 1: request, 2: reply (the JSON header says which one); lets a reader reject a stray frame early.
  out.writeUInt8(REQUEST_KINDS.has(header.kind) ? 1 : 2, 0);
  out.writeUInt32BE(json.length, 1);
  json.copy(out, 5);
  if (payload) out.set(payload, 5 + json.length);
  return out;
}

export function decodeFrame<T extends Request | Reply>(frame: Buffer): { header: T; payload: Buffer } {
  if (frame.length < 5) throw new RangeError(`frame of ${frame.length} bytes is too short`);
  const len = frame.readUInt32BE(1);
  if (5 + len > frame.length) throw new RangeError(`frame header of ${len} bytes overruns the frame`);
  const header = JSON.parse(frame.subarray(5, 5 + len).toString("utf8")) as T;
  return { header, payload: frame.subarray(5 + len) };
}
