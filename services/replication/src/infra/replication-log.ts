import { ReplicationEvent } from "#schemas/replication.js";
import type { Versioned } from "#common/event-sourcing/aggregate.js";
import { EventStore, jsonCodec, type EventStoreOptions } from "#common/event-sourcing/event-store.js";
import { handle, storePort, type Handled } from "#common/event-sourcing/handle.js";
import { EVT_STREAM } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { configuredEventTrust } from "#common/signing.js";
import { createLogger } from "#common/logger.js";
import { replicationRefusal } from "../domain/replication/producers.js";
import { replicationAggregate } from "../domain/replication/aggregate.js";
import type { ReplicationCommand } from "../domain/replication/decide.js";
import type { Replication } from "../domain/replication/state.js";

/** dwcp.evt.replication.<vm>: captured by DWCP_EVT's dwcp.evt.>. */
export const replicationSubject = (vm: string): string => `dwcp.evt.replication.${vm}`;

let rejectLog: ReturnType<typeof createLogger> | undefined;

/**
 * One VM's replication events: the event-sourcing core's store over dwcp.evt.replication.<vm>,
 * signed with the process's role key; reads fold only events their producer may make.
 */
export class ReplicationLog {
  readonly store: EventStore<ReplicationEvent>;

  constructor(nats: Nats, opts: EventStoreOptions<ReplicationEvent> = {}) {
    this.store = new EventStore(
      nats.js,
      nats.jsm,
      {
        stream: EVT_STREAM,
        subject: replicationSubject,
        allSubjects: replicationSubject(">"),
        codec: jsonCodec(ReplicationEvent),
      },
      {
        trust: configuredEventTrust(),
        admit: (e) => replicationRefusal(e.event, e.provenance),
        onRejected: (e, reason) => {
          rejectLog ??= createLogger("replication");
          rejectLog.warn({ subject: e.subject, streamSeq: e.seq, type: e.event.type, reason }, "event ignored");
        },
        ...opts,
      },
    );
  }

  async lastSeq(vm: string): Promise<number> {
    return this.store.lastSeq(vm);
  }

  /** The VM's replication as of now and the subject's last sequence (for the next append). */
  async read(vm: string): Promise<Versioned<Replication>> {
    return this.store.load(replicationAggregate, vm);
  }

  /**
   * Decides `command` on the VM's log and appends what it decides (msgID `msgIdBase`). `known` is
   * a state the caller read already: the first decision uses it (and expects its sequence), so
   * a log that moved since is a conflict, re-read and re-decided like any other.
   */
  async handle(
    vm: string,
    command: ReplicationCommand,
    msgIdBase: string,
    o: { now?: Date; known?: Versioned<Replication> } = {},
  ): Promise<Handled<Replication, ReplicationEvent>> {
    const fromStore = storePort(this.store, replicationAggregate);
    let known = o.known;
    const port = {
      ...fromStore,
      load: async (id: string) => {
        const first = known;
        known = undefined;
        return first ?? fromStore.load(id);
      },
    };
    return handle(replicationAggregate, port, {
      id: vm,
      command,
      msgIdBase,
      context: () => ({ now: o.now ?? new Date() }),
    });
  }
}
