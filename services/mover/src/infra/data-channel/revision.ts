import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { DATA_ALPN, NONCE_BYTES } from "../../domain/data-channel/frames.js";

/** Exporter label of revision 1.1's HELLO nonce. */
const HELLO_NONCE_LABEL = "EXPORTER-dwcp-data hello";

/** Whether both ends of this link took revision 1.1 by ALPN (TLS only). */
export function speaks11(socket: Socket): boolean {
  return socket instanceof TLSSocket && socket.alpnProtocol === DATA_ALPN;
}

/**
 * Revision 1.1's HELLO nonce instead of a CHALLENGE: exported from the TLS session (RFC 8446
 * §7.5), so both ends have it once the handshake is done, and it is unique to the session (both
 * ends' randoms and the key exchange go into it): a HELLO answering it proves nothing on another
 * connection, as one answering a fresh CHALLENGE does not. Later HELLOs derive from it as ever.
 */
export function exportedNonce(socket: TLSSocket): Uint8Array {
  return socket.exportKeyingMaterial(NONCE_BYTES, HELLO_NONCE_LABEL, Buffer.alloc(0));
}
