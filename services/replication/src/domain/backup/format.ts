/** Headers restore-log adds so a restored message still knows where it stood in the original. */
export const ORIG_SEQ_HEADER = "Dwcp-Orig-Seq";
/** Original stream timestamp, nanoseconds since the epoch (decimal). */
export const ORIG_TIME_HEADER = "Dwcp-Orig-Time";
/** The original Nats-Msg-Id, kept for audit; not used for dedup in the restored stream. */
export const ORIG_MSG_ID_HEADER = "Dwcp-Orig-Msg-Id";
