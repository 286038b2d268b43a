/** Headers restore-log adds so a restored message still knows where it stood in the original. */
export const ORIG_SEQ_HEADER = "Dwcp-Orig-Seq";
/** Original stream timestamp, nanoseconds since the epoch (decimal). */
export const ORIG_TIME_HEADER = "Dwcp-Orig-Time";
/** The original Nats-Msg-Id, kept for audit; not used for dedup in the restored stream. */
export const ORIG_MSG_ID_HEADER = "Dwcp-Orig-Msg-Id";

/**
 * How a payload is kept in a backup line: as JSON when re-serialising it gives the very same bytes
 * (so restore-log publishes exactly what was stored), else as base64.
 */
export function encodePayload(bytes: Uint8Array): { json: unknown } | { data: string } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length > 0 && (buf[0] === 0x7b || buf[0] === 0x5b)) {
    try {
      const text = buf.toString("utf8");
      const json: unknown = JSON.parse(text);
      if (JSON.stringify(json) === text && Buffer.byteLength(text) === buf.length) return { json };
    } catch {
      /* not JSON: base64 */
    }
  }
  return { data: buf.toString("base64") };
}

export function payloadBytes(m: { data?: string; json?: unknown }): Buffer {
  return m.data !== undefined ? Buffer.from(m.data, "base64") : Buffer.from(JSON.stringify(m.json));
}

/** Whole milliseconds of a non-negative decimal count of nanoseconds, without a BigInt per event. */
export const nanosToMs = (ns: string): number => (ns.length > 6 ? Number(ns.slice(0, -6)) : 0);
