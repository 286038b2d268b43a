/**
 * The authenticated connection layer both dwcp links are built on: the mover data channel
 * (services/mover/src/infra/data-channel) and the replication link
 * (services/replication/src/infra/tcp.ts).
 *
 * - transport.ts: dial()/listen(), the only place a link socket is opened, plaintext or TLS 1.3
 *   with mutual authentication (the peer's dwcp:host identity checked, refusals logged).
 * - tls.ts: the links' TLS settings (DWCP_TLS_*, DWCP_DATA_PLAINTEXT), material and identities.
 * - refusal-log.ts: rate-limited logging of connections refused before they authenticate. Pure tally.
 * - handshake.ts: the shared-key proof (nonce, derived key, HMAC, constant-time check). Pure.
 * - reader.ts: the one frame reader (PullReader, SocketReader) over an IncrementalDecoder.
 * - records.ts: length-prefixed records with a size check before buffering. Pure.
 * - byte-queue.ts: received fragments kept without copying. Pure.
 *
 * Pure modules are imported directly (domain code may use them); this file re-exports the rest.
 */
export * from "./errors.js";
export * from "./handshake.js";
export * from "./reader.js";
export * from "./records.js";
export * from "./transport.js";
export { ByteQueue } from "./byte-queue.js";
export * from "./tls.js";
export * from "./refusal-log.js";
