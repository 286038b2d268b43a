import { posix } from "node:path";
import type { DirHandle } from "#native/index.js";
import type { Logger } from "#common/logger.js";
import { STORE_DIR } from "../infra/chunk-store.js";
import { answerFrame, DestinationAgent } from "./destination.js";

/**
 * The stores a listening replication agent serves: <root>/<dir>/.dwcp-store for each directory a
 * source opens (the root's own for a source that opens none), each made beneath the held root on
 * first use (no ".." or symlink leads out of it) and kept open for the agent's lifetime.
 */
export class AgentStores {
  private readonly agents = new Map<string, Promise<DestinationAgent>>();

  constructor(
    private readonly root: DirHandle,
    private readonly log: Logger,
  ) {}

  /** The agent of the store beneath `dir` ("" for the root's own), opened once. */
  open(dir: string): Promise<DestinationAgent> {
    let agent = this.agents.get(dir);
    if (agent === undefined) {
      agent = this.root
        .makeDirs(posix.join(dir || ".", STORE_DIR))
        .then(({ dir: held }) => DestinationAgent.openIn(held, this.log).finally(() => held.close()));
      // A refused or failed open is not remembered: the next source may ask again.
      agent.catch(() => this.agents.delete(dir));
      this.agents.set(dir, agent);
    }
    return agent;
  }

  /** A connection's request handler: the root's store until its "open" names another. */
  session(): (frame: Buffer) => Promise<Buffer> {
    let current: Promise<DestinationAgent> | undefined;
    return (frame) =>
      answerFrame(frame, this.log, async (req, payload) => {
        if (req.kind !== "open") return (await (current ??= this.open(""))).reply(req, payload);
        current = this.open(req.dir);
        return { kind: "opened", version: 1, store: (await current).store.dir };
      });
  }

  async close(): Promise<void> {
    for (const opening of this.agents.values()) {
      const agent = await opening.catch(() => undefined); // a failed open holds nothing
      await agent?.store.close();
    }
  }
}
