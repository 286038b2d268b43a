import { DeliverPolicy, JetStreamApiError } from "@nats-io/jetstream";
import type { ReplicationEvent } from "#schemas/replication.js";
import { VersionConflictError } from "#common/errors.js";
import { EVT_STREAM } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { evolve } from "../domain/replication/evolve.js";
import { initialReplication, type Replication } from "../domain/replication/state.js";
import { decodeMsg } from "./decode.js";

/** dwcp.evt.replication.<vm>: captured by DWCP_EVT's dwcp.evt.>. */
export const replicationSubject = (vm: string): string => `dwcp.evt.replication.${vm}`;
const encoder = new TextEncoder();

/** One VM's replication events: folded on read, appended with optimistic concurrency. */
export class ReplicationLog {
  constructor(private readonly nats: Nats) {}

  async lastSeq(vm: string): Promise<number> {
    try {
      return (await this.nats.jsm.streams.getMessage(EVT_STREAM, { last_by_subj: replicationSubject(vm) }))?.seq ?? 0;
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === 10037) return 0;
      throw err;
    }
  }

  /** The VM's replication as of now and the subject's last sequence (for the next append). */
  async read(vm: string): Promise<{ state: Replication; seq: number }> {
    const last = await this.lastSeq(vm);
    let state = initialReplication(vm);
    if (last === 0) return { state, seq: 0 };
    const consumer = await this.nats.js.consumers.get(EVT_STREAM, {
      filter_subjects: replicationSubject(vm),
      deliver_policy: DeliverPolicy.All,
    });
    const iter = await consumer.consume();
    try {
      for await (const m of iter) {
        const rec = decodeMsg(m);
        if (rec.kind === "replication") state = evolve(state, rec.event);
        if (m.seq >= last) break;
      }
    } finally {
      iter.stop();
    }
    return { state, seq: last };
  }

  /** Appends in order; `expectedSeq` is the subject's last sequence the caller folded. */
  async append(vm: string, events: ReplicationEvent[], msgIdBase: string, expectedSeq: number): Promise<number> {
    let seq = expectedSeq;
    for (const [i, e] of events.entries()) {
      try {
        const ack = await this.nats.js.publish(replicationSubject(vm), encoder.encode(JSON.stringify(e)), {
          msgID: events.length === 1 ? msgIdBase : `${msgIdBase}.${i}`,
          expect: { lastSubjectSequence: seq },
          timeout: 10_000,
        });
        seq = ack.seq;
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === 10071)
          throw new VersionConflictError(replicationSubject(vm), seq, { cause: err });
        throw err;
      }
    }
    return seq;
  }
}
