const decoder = new TextDecoder();

/** JSON.parse of a message body; undefined for bytes that are not JSON (callers validate). */
export function safeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
}
