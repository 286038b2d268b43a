import type { TLSSocket } from "node:tls";
import { SEALED_IV_BYTES, SEALED_KEY_BYTES, type SealKeys } from "#native/index.js";

/**
 * Sealed records: how a TLS link (a batch link, or a live migration's raw tunnel) carries its
 * bulk direction without Node's TLS. The TLS 1.3 handshake with mutual authentication, and the
 * protocol's own key proof inside it, run in Node as always. Then both ends take one AES-128-GCM
 * key and IV base per direction from that session with the RFC 8446 §7.5 exporter
 * (exportKeyingMaterial; the label names the direction, the context binds the protocol's
 * challenge), and the sender writes records that native code seals (native/sealed.ts): a 32-byte
 * header (type, length, a 64-bit counter, the GCM tag) and the ciphertext, AAD = the header's
 * first 16 bytes, nonce = IV XOR counter. A record that fails its tag, or carries another counter
 * than the next one (replayed, dropped, reordered), is refused and closes the link; nothing of it
 * is delivered.
 *
 * The switch must leave no byte to the wrong reader: Node's TLS reads ahead from the socket, so
 * the receiver stops its TLS reads before it tells the sender to switch (the protocol's AUTH_OK,
 * a tunnel's TUNNEL_OK), and the sender writes its first sealed record only after reading that
 * answer. The other direction stays TLS (it carries the receiver's small answers). A tunnel's
 * stream ends with an empty record, so that a cut link is never taken for the end of the stream.
 */

/** Exporter label of the sender → receiver (dialling → accepting side) direction. */
export const SEALED_LABEL_CLIENT_TO_SERVER = "EXPORTER-dwcp-data client->server";

/**
 * Records one key may seal: GCM's 64-bit counter never wraps this side of the bound, and the
 * bytes bound keeps far inside AES-GCM's per-key limits (TLS 1.3 rekeys after 2^24.5 records of
 * 16 KiB, ~2^38.5 bytes). A sender that reaches either closes the link; the next one has new keys.
 */
export const SEALED_MAX_RECORDS = 2 ** 32;
export const SEALED_MAX_BYTES = 2 ** 38;

/** The key and IV base of one direction, exported from the authenticated TLS session. */
export function exportSealKeys(socket: TLSSocket, label: string, context: Uint8Array): SealKeys {
  const m = socket.exportKeyingMaterial(SEALED_KEY_BYTES + SEALED_IV_BYTES, label, Buffer.from(context));
  return { key: m.subarray(0, SEALED_KEY_BYTES), iv: m.subarray(SEALED_KEY_BYTES) };
}
